const _: () = {
    fn __hotrestart_assert_persist() {
        ::hotrestart::__private::assert_persist::<AtomicU64>();
        ::hotrestart::__private::assert_persist::<RwLock<HashMap<String, Session>>>();
    }
    #[automatically_derived]
    impl ::hotrestart::__private::State for AppState {
        fn save<'__hotrestart_a>(
            &'__hotrestart_a self,
            __hotrestart_w: &mut ::hotrestart::__private::SnapshotWriter<'__hotrestart_a>,
        ) -> ::core::result::Result<(), ::hotrestart::__private::Error> {
            __hotrestart_w.field::<AtomicU64>("hits", &self.hits)?;
            __hotrestart_w
                .field::<RwLock<HashMap<String, Session>>>("sessions", &self.sessions)?;
            ::core::result::Result::Ok(())
        }
        fn restore(
            &mut self,
            __hotrestart_r: &mut ::hotrestart::__private::SnapshotReader,
        ) -> ::core::result::Result<(), ::hotrestart::__private::Error> {
            let __hotrestart_hits = __hotrestart_r.take::<AtomicU64>("hits")?;
            let __hotrestart_sessions = __hotrestart_r
                .take::<RwLock<HashMap<String, Session>>>("sessions")?;
            if let ::core::option::Option::Some(__hotrestart_value) = __hotrestart_hits {
                self.hits = __hotrestart_value;
            }
            if let ::core::option::Option::Some(__hotrestart_value) = __hotrestart_sessions {
                self.sessions = __hotrestart_value;
            }
            ::core::result::Result::Ok(())
        }
    }
};
