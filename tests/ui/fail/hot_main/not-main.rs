#[hotrestart::hot_main]
async fn serve(_hot: hotrestart::Hot) {}
