#[hotrestart::hot_main]
async fn main(_hot: std::sync::Arc<hotrestart::Hot>) {}
