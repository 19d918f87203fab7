fn main() -> Result<(), Box<dyn std::error::Error>> {
    async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
        let listener = hot.tcp("http", "127.0.0.1:3000")?;
        let counter = hot.ready(Counter::default()).await?;
        hotrestart::http::serve(&hot, listener, app(counter)).await?;
        Ok(())
    }
    ::hotrestart::__private::run_main(
        ::hotrestart::__private::MainOptions::new()
            .ready_timeout(::core::time::Duration::from_millis(5000u64))
            .state_file("counter.state"),
        |hot| main(hot),
    )
}
