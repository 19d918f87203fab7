#[hotrestart::hot_main(flavor = "single_thread")]
async fn main(_hot: hotrestart::Hot) {}

mod threads {
    #[hotrestart::hot_main(flavor = "current_thread", worker_threads = 2)]
    async fn main(_hot: hotrestart::Hot) {}
}

mod hand_over {
    #[hotrestart::hot_main(hand_over_connections = "no")]
    async fn main(_hot: hotrestart::Hot) {}
}

mod supervisor {
    #[hotrestart::hot_main(supervisor = "auto")]
    async fn main(_hot: hotrestart::Hot) {}
}
