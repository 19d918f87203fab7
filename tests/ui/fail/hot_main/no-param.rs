#[hotrestart::hot_main]
async fn main() {}
