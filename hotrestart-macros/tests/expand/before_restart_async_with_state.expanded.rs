async fn log_handover(counter: &Counter) {
    tracing::info!(hits = counter.hits.load(Ordering::SeqCst), "handing over");
}
const _: () = {
    #[::hotrestart::__private::linkme::distributed_slice(::hotrestart::__private::HOOKS)]
    #[linkme(crate = ::hotrestart::__private::linkme)]
    static __HOTRESTART_HOOK: ::hotrestart::__private::Hook = ::hotrestart::__private::Hook {
        name: ::core::concat!(::core::module_path!(), "::", "log_handover"),
        when: ::hotrestart::__private::HookWhen::BeforeRestart,
        order: 0,
        timeout_ms: ::core::option::Option::None,
        takes: ::core::option::Option::Some(|| (
            ::core::any::TypeId::of::<Counter>(),
            ::core::any::type_name::<Counter>(),
        )),
        run: __hotrestart_run,
    };
    fn __hotrestart_run<'a>(
        __hotrestart_cx: &'a ::hotrestart::__private::HookContext,
    ) -> ::hotrestart::__private::BoxFuture<
        'a,
        ::core::result::Result<(), ::std::string::String>,
    > {
        ::std::boxed::Box::pin(async move {
            let __hotrestart_arg0 = __hotrestart_cx.state::<Counter>()?;
            ::hotrestart::__private::HookOutput::into_result(
                log_handover(__hotrestart_arg0).await,
            )
        })
    }
};
