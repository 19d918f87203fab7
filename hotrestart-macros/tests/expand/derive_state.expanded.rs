const _: () = {
    #[allow(unused_imports)]
    use ::hotrestart::__private::{
        NotTracked as _, TrackedBehindALock as _, Unsupported as _, ViaLock as _,
        ViaSerde as _, ViaTracked as _,
    };
    fn __hotrestart_assert_persist() {
        (&&&&&::hotrestart::__private::Field::<AtomicU64>::NEW).persist_check();
        (&&&&&::hotrestart::__private::Field::<RwLock<HashMap<String, Session>>>::NEW)
            .persist_check();
    }
    #[automatically_derived]
    impl ::hotrestart::__private::State for AppState {
        fn save<'__hotrestart_a>(
            &'__hotrestart_a self,
            __hotrestart_w: &mut ::hotrestart::__private::SnapshotWriter<'__hotrestart_a>,
        ) -> ::core::result::Result<(), ::hotrestart::__private::Error> {
            (&&&&::hotrestart::__private::Field::<AtomicU64>::NEW)
                .persist_save(__hotrestart_w, "hits", &self.hits)?;
            (&&&&::hotrestart::__private::Field::<RwLock<HashMap<String, Session>>>::NEW)
                .persist_save(__hotrestart_w, "sessions", &self.sessions)?;
            ::core::result::Result::Ok(())
        }
        fn restore(
            &mut self,
            __hotrestart_r: &mut ::hotrestart::__private::SnapshotReader,
        ) -> ::core::result::Result<(), ::hotrestart::__private::Error> {
            let __hotrestart_hits = (&&&&::hotrestart::__private::Field::<
                AtomicU64,
            >::NEW)
                .persist_take(__hotrestart_r, "hits")?;
            let __hotrestart_sessions = (&&&&::hotrestart::__private::Field::<
                RwLock<HashMap<String, Session>>,
            >::NEW)
                .persist_take(__hotrestart_r, "sessions")?;
            if let ::core::option::Option::Some(__hotrestart_value) = __hotrestart_hits {
                self.hits = __hotrestart_value;
            }
            if let ::core::option::Option::Some(__hotrestart_value) = __hotrestart_sessions {
                self.sessions = __hotrestart_value;
            }
            ::core::result::Result::Ok(())
        }
        fn tracked<'__hotrestart_a>(
            &'__hotrestart_a self,
            __hotrestart_visit: &mut dyn ::core::ops::FnMut(
                &'static str,
                &'__hotrestart_a dyn ::hotrestart::__private::Tracked,
            ),
        ) {
            let _ = &__hotrestart_visit;
            (&&&&::hotrestart::__private::Field::<AtomicU64>::NEW)
                .persist_tracked(__hotrestart_visit, "hits", &self.hits);
            (&&&&::hotrestart::__private::Field::<RwLock<HashMap<String, Session>>>::NEW)
                .persist_tracked(__hotrestart_visit, "sessions", &self.sessions);
        }
    }
};
