#[hotrestart::before_restart]
struct Flush;

fn main() {}
