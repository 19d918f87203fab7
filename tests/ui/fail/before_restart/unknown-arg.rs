#[hotrestart::before_restart(priority = 1)]
fn flush() {}

fn main() {}
