fn flush() -> std::io::Result<()> {
    std::io::Write::flush(&mut std::io::stdout())
}
const _: () = {
    #[::hotrestart::__private::linkme::distributed_slice(::hotrestart::__private::HOOKS)]
    #[linkme(crate = ::hotrestart::__private::linkme)]
    static __HOTRESTART_HOOK: ::hotrestart::__private::Hook = ::hotrestart::__private::Hook {
        name: ::core::concat!(::core::module_path!(), "::", "flush"),
        when: ::hotrestart::__private::HookWhen::BeforeRestart,
        order: 0,
        timeout_ms: ::core::option::Option::None,
        takes: ::core::option::Option::None,
        run: __hotrestart_run,
    };
    fn __hotrestart_run<'a>(
        __hotrestart_cx: &'a ::hotrestart::__private::HookContext,
    ) -> ::hotrestart::__private::BoxFuture<
        'a,
        ::core::result::Result<(), ::std::string::String>,
    > {
        ::std::boxed::Box::pin(async move {
            ::hotrestart::__private::run_blocking(move || {
                    let __hotrestart_out = flush();
                    ::hotrestart::__private::HookOutput::into_result(__hotrestart_out)
                })
                .await
        })
    }
};
