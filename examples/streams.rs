//! The second reference service: long-lived connections of every kind, none of which stalls a
//! hot restart. Its interface is a contract, like the counter's.
//!
//! - `http` on `127.0.0.1:$PORT` (default 3000); every HTTP response carries `x-pid`:
//!   - `GET /` → `hello`; `GET /slow?ms=N` → waits N ms, then answers its pid;
//!   - `GET /ws` → WebSocket: each text message is answered with `<pid> <message>`; at a
//!     restart or SIGTERM the old process closes it with 1012 ("service restart");
//!   - `GET /sse` → `text/event-stream`, an event `data: <pid> <n>` every 100 ms until the
//!     server ends it (at a restart, the old process ends the stream: `EventSource` reconnects);
//!   - gRPC on the same listener (h2c): `grpc.health.v1.Health` (`Check`, `Watch`) and
//!     `hotrestart.Echo/Echo` (unary: `EchoRequest { message }` → `EchoReply { message:
//!     "<pid> <message>" }`); at a restart, open `Watch` streams end with `UNAVAILABLE`.
//! - `echo` on `127.0.0.1:$ECHO_PORT` (default `PORT`+1): a line protocol, each line answered
//!   with `<pid> <line>`; at a restart an open connection is handed to the successor at a line
//!   boundary and keeps working, answered by the new pid.
//! - SIGHUP: hot restart; SIGTERM: graceful exit; `HOTRESTART_*` as for the counter.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::Query;
use axum::http::HeaderValue;
use axum::response::sse::{Event, Sse};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hotrestart::http::{LongLived, SERVICE_RESTART};
use hotrestart::{Hot, Movable, Signal};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[hotrestart::hot_main]
async fn main(hot: Hot) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let echo_port: u16 = std::env::var("ECHO_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(port + 1);
    let http = hot.tcp("http", ("127.0.0.1", port))?;
    let echo = hot.tcp("echo", ("127.0.0.1", echo_port))?;
    hot.ready(()).await?;

    // The echo connections the previous process handed over, then new ones.
    for moved in hot.handed_over::<u64>("echo") {
        let movable = hot.movable("echo");
        tokio::spawn(echo_connection(
            moved.stream,
            moved.unread,
            moved.state,
            movable,
        ));
    }
    let echo_hot = hot.clone();
    let echo_loop = tokio::spawn(async move {
        while let Some((stream, movable)) = echo_hot.accept_movable("echo", &echo).await {
            tokio::spawn(echo_connection(stream, Vec::new(), 0, movable));
        }
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<grpc::EchoServer>().await;
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(grpc::EchoServer)
        .prepare()
        .into_axum_router();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/slow", get(slow))
        .route("/ws", get(ws))
        .route("/sse", get(sse))
        .merge(grpc)
        .layer(axum::middleware::map_response(add_pid));
    hotrestart::http::serve(&hot, http, app).await?;
    let _ = echo_loop.await;
    Ok(())
}

async fn add_pid(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-pid", HeaderValue::from(std::process::id()));
    response
}

#[derive(serde::Deserialize)]
struct SlowQuery {
    ms: u64,
}

async fn slow(Query(q): Query<SlowQuery>) -> String {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    std::process::id().to_string()
}

async fn ws(upgrade: WebSocketUpgrade, live: LongLived) -> Response {
    upgrade.on_upgrade(|socket| websocket(socket, live))
}

async fn websocket(mut socket: WebSocket, mut live: LongLived) {
    let pid = std::process::id();
    loop {
        tokio::select! {
            _ = live.stopping() => {
                let close = CloseFrame { code: SERVICE_RESTART, reason: "service restart".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = format!("{pid} {}", text.as_str());
                    if socket.send(Message::Text(reply.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Ends by itself only with the client: the old process ends it when it stops.
async fn sse() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let pid = std::process::id();
    let events = futures_util::stream::unfold(0u64, move |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((Ok(Event::default().data(format!("{pid} {n}"))), n + 1))
    });
    Sse::new(events)
}

/// One echo connection: lines answered with the pid; handed over at a line boundary, with the
/// bytes read and not yet answered and the number of lines answered so far.
async fn echo_connection(
    stream: tokio::net::TcpStream,
    unread: Vec<u8>,
    mut answered: u64,
    mut movable: Movable,
) {
    let pid = std::process::id();
    // Bytes the previous process read but did not answer come first.
    let mut reader = BufReader::new(std::io::Cursor::new(unread).chain(stream));
    let mut line = String::new();
    loop {
        tokio::select! {
            signal = movable.signal() => match signal {
                Signal::HandOver => {
                    // Not answered yet, in order: a partly read line (`read_line` keeps what
                    // it read when cancelled), what the buffer holds, what is left of `unread`.
                    let mut left = std::mem::take(&mut line).into_bytes();
                    left.extend_from_slice(reader.buffer());
                    let (cursor, stream) = reader.into_inner().into_inner();
                    left.extend_from_slice(&cursor.get_ref()[cursor.position() as usize..]);
                    match movable.hand_over(stream, &left, &answered).await {
                        Ok(()) => return,
                        Err(stream) => {
                            reader = BufReader::new(std::io::Cursor::new(left).chain(stream));
                        }
                    }
                }
                Signal::Stop => return,
            },
            read = reader.read_line(&mut line) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                answered += 1;
                let reply = format!("{pid} {line}");
                if reader.get_mut().get_mut().1.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                line.clear();
            }
        }
    }
}

/// `hotrestart.Echo`, written out as tonic's code generator would (no `.proto` build step).
mod grpc {
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use tonic::codegen::{http, BoxFuture, Service};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoRequest {
        #[prost(string, tag = "1")]
        pub message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoReply {
        #[prost(string, tag = "1")]
        pub message: String,
    }

    struct Echo;

    impl tonic::server::UnaryService<EchoRequest> for Echo {
        type Response = EchoReply;
        type Future = BoxFuture<tonic::Response<EchoReply>, tonic::Status>;
        fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
            Box::pin(async move {
                let message = format!("{} {}", std::process::id(), request.into_inner().message);
                Ok(tonic::Response::new(EchoReply { message }))
            })
        }
    }

    #[derive(Clone)]
    pub struct EchoServer;

    impl tonic::server::NamedService for EchoServer {
        const NAME: &'static str = "hotrestart.Echo";
    }

    impl<B> Service<http::Request<B>> for EchoServer
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            Box::pin(async move {
                if request.uri().path() != "/hotrestart.Echo/Echo" {
                    return Ok(tonic::Status::unimplemented("no such method").into_http());
                }
                let codec = tonic::codec::ProstCodec::<EchoReply, EchoRequest>::default();
                Ok(tonic::server::Grpc::new(codec).unary(Echo, request).await)
            })
        }
    }
}
