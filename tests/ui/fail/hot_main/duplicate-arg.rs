#[hotrestart::hot_main(drain_timeout = "1s", state_file = "app.state", drain_timeout = "2s")]
async fn main(_hot: hotrestart::Hot) {}
