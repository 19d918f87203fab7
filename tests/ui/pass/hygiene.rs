//! Every macro, expanded where the names its generated code could use by accident mean
//! something else: `core`, `std` and `hotrestart` are local modules, and `Result`, `Ok`, `Err`,
//! `Option`, `Some`, `None`, `Box`, `String` and `Duration` are local items. Only fully
//! qualified paths (`::core::...`, `::hotrestart::__private::...`) compile here.

#![allow(dead_code, non_camel_case_types)]

mod core {}
mod hotrestart {}

type Result = ();
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Box;
struct String;
struct Duration;
struct Vec;

mod hooks {
    mod std {}
    mod core {}

    type Result<T> = T;
    struct Ok;
    struct Err;

    #[::hotrestart::before_restart]
    async fn async_hook() {}

    #[::hotrestart::before_restart]
    fn state_hook(state: &super::AppState) -> ::core::result::Result<(), &'static str> {
        let _ = state;
        ::core::result::Result::Ok(())
    }
}

#[derive(::hotrestart::State)]
struct AppState {
    #[persist]
    hits: u64,
    #[persist]
    names: ::std::vec::Vec<::std::string::String>,
}

#[::hotrestart::hot_main(ready_timeout = "1s", drain_timeout = "10ms", flavor = "current_thread")]
async fn main(_hot: ::hotrestart::Hot) {}
