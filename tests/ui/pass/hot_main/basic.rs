//! The smallest `#[hot_main]`: no arguments, no return value. Runs and returns at once.

#[hotrestart::hot_main]
async fn main(_hot: hotrestart::Hot) {}
