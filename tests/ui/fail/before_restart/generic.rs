#[hotrestart::before_restart]
fn flush<S: Sync>(_state: &S) {}

fn main() {}
