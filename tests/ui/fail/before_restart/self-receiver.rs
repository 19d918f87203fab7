struct AppState;

impl AppState {
    #[hotrestart::before_restart]
    async fn flush(&self) {}
}

fn main() {}
