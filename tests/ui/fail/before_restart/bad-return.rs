#[hotrestart::before_restart]
fn flush() -> u32 {
    0
}

fn main() {}
