#[hotrestart::hot_main(ready_timeout = "5s", shutdown_timeout = "5s")]
async fn main(_hot: hotrestart::Hot) {}
