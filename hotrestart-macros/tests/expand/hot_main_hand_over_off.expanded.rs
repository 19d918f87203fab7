fn main() {
    async fn main(hot: hotrestart::Hot) {
        let _ = hot;
    }
    ::hotrestart::__private::run_main(
        ::hotrestart::__private::MainOptions::new()
            .drain_timeout(::core::time::Duration::from_millis(2000u64))
            .hand_over_connections(false),
        |hot| main(hot),
    )
}
