// `#[tokio::main]` expands first and makes `main` synchronous.
#[tokio::main]
#[hotrestart::hot_main]
async fn main() {}
