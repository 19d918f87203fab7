#[hotrestart::hot_main(ready_timeout = "5 seconds", drain_timeout = "250")]
async fn main(_hot: hotrestart::Hot) {}
