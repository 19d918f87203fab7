#[hotrestart::before_restart(order = "first", timeout = "soon")]
fn flush() {}

fn main() {}
