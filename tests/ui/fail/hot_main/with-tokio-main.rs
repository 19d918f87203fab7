#[hotrestart::hot_main]
#[tokio::main(flavor = "current_thread")]
async fn main(_hot: hotrestart::Hot) {}
