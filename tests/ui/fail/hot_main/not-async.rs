#[hotrestart::hot_main]
fn main(_hot: hotrestart::Hot) {}
