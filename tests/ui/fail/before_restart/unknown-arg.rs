#[hotrestart::before_restart(order = 1)]
fn flush() {}

fn main() {}
