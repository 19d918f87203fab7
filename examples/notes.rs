//! The third reference service: the article's own scenario — a database pool closed by a
//! before-restart hook, reopened if the restart rolls back, and a cache that survives restarts.
//! Its interface is a contract, like the counter's.
//!
//! - SQLite through an `sqlx` pool (the database file is `$NOTES_DB`, default `notes.db`);
//! - one TCP listener `http` on `127.0.0.1:$PORT` (default 3000); every response carries `x-pid`:
//!   - `GET /` → `hello`;
//!   - `POST /notes` (body: the text) → inserted and committed, then 200 with the new id;
//!   - `GET /notes/{id}` → 200 with the text, header `x-cache: hit` or `miss`; notes read are
//!     kept in a `#[persist]` cache (the 1,000 most recent), so a successor answers `hit` for
//!     notes read before the restart; 404 for an unknown id;
//!   - `GET /count` → 200 with the number of rows in the database;
//! - `#[before_restart]` logs the cache size and closes the pool (`pool.close().await`, as in the
//!   article); `#[on_rollback]` reopens it; on a graceful exit the pool is closed after the
//!   drain (and SQLite checkpoints its write-ahead log);
//! - the successor opens its own pool during its initialisation, before the old process quiesces;
//! - SIGHUP / SIGTERM / `HOTRESTART_*` as for the counter.

// ANCHOR: all
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hotrestart::HookReason;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// Notes read recently, oldest first: handed to the successor.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cache {
    notes: HashMap<i64, String>,
    order: VecDeque<i64>,
}

const CACHE_SIZE: usize = 1000;

impl Cache {
    fn put(&mut self, id: i64, text: String) {
        if self.notes.insert(id, text).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > CACHE_SIZE {
            if let Some(old) = self.order.pop_front() {
                self.notes.remove(&old);
            }
        }
    }
}

// ANCHOR: state
#[derive(Default, hotrestart::State)]
struct Notes {
    /// The read cache: a tokio lock around a serde type, persisted as it is.
    #[persist]
    cache: tokio::sync::RwLock<Cache>,
    /// Not persisted: each process opens its own pool. `None` while closed by the hook.
    pool: RwLock<Option<SqlitePool>>,
    /// Where the database is.
    db: String,
}
// ANCHOR_END: state

async fn open(db: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        // Both processes write during a handover: the WAL lets readers and a writer share the
        // file; a writer waits for the other's transaction instead of failing.
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    Ok(pool)
}

impl Notes {
    fn pool(&self) -> Option<SqlitePool> {
        self.pool.read().unwrap().clone()
    }
}

// ANCHOR: hooks
/// The article's hook: the old process closes its pool before it hands over (or exits).
#[hotrestart::before_restart]
async fn close_pool(notes: &Notes, why: HookReason) {
    let cached = notes.cache.read().await.notes.len();
    let pool = notes.pool.write().unwrap().take();
    tracing::info!(cached, ?why, "before_restart: closing the database pool");
    if let Some(pool) = pool {
        pool.close().await;
    }
}

/// The half the article leaves out: the restart failed, this process serves on — with a pool.
#[hotrestart::on_rollback]
async fn reopen_pool(notes: &Notes) -> Result<(), sqlx::Error> {
    let pool = open(&notes.db).await?;
    *notes.pool.write().unwrap() = Some(pool);
    tracing::info!("on_rollback: the database pool is open again");
    Ok(())
}
// ANCHOR_END: hooks

#[hotrestart::hot_main]
async fn main(hot: hotrestart::Hot) -> Result<(), Box<dyn std::error::Error>> {
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
    let db = std::env::var("NOTES_DB").unwrap_or_else(|_| "notes.db".to_owned());
    let listener = hot.tcp("http", ("127.0.0.1", port))?;
    // The slow initialisation: the successor opens its own pool while the old process serves.
    let pool = open(&db).await?;
    let notes = Notes {
        pool: RwLock::new(Some(pool)),
        db,
        ..Notes::default()
    };
    let notes = hot.ready(notes).await?;
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/notes", post(add))
        .route("/notes/{id}", get(read))
        .route("/count", get(count))
        .layer(axum::middleware::map_response(add_pid))
        .with_state(notes.clone());
    hotrestart::http::serve(&hot, listener, app).await?;
    // After the drain: on a graceful exit the hook closed the pool; after a handover too.
    if let Some(pool) = notes.pool() {
        pool.close().await;
    }
    Ok(())
}

/// 503 when the pool is closed (only between the hook and this process's end).
fn no_pool() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database pool is closed",
    )
        .into_response()
}

fn db_error(e: sqlx::Error) -> Response {
    tracing::warn!("database: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn add(State(notes): State<Arc<Notes>>, text: String) -> Response {
    let Some(pool) = notes.pool() else {
        return no_pool();
    };
    // Acknowledged once committed (each statement is its own transaction).
    match sqlx::query_scalar::<_, i64>("INSERT INTO notes (text) VALUES (?) RETURNING id")
        .bind(text)
        .fetch_one(&pool)
        .await
    {
        Ok(id) => id.to_string().into_response(),
        Err(e) => db_error(e),
    }
}

async fn read(State(notes): State<Arc<Notes>>, Path(id): Path<i64>) -> Response {
    if let Some(text) = notes.cache.read().await.notes.get(&id).cloned() {
        return ([("x-cache", "hit")], text).into_response();
    }
    let Some(pool) = notes.pool() else {
        return no_pool();
    };
    match sqlx::query_scalar::<_, String>("SELECT text FROM notes WHERE id = ?")
        .bind(id)
        .fetch_optional(&pool)
        .await
    {
        Ok(Some(text)) => {
            notes.cache.write().await.put(id, text.clone());
            ([("x-cache", "miss")], text).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such note").into_response(),
        Err(e) => db_error(e),
    }
}

async fn count(State(notes): State<Arc<Notes>>) -> Response {
    let Some(pool) = notes.pool() else {
        return no_pool();
    };
    match sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM notes")
        .fetch_one(&pool)
        .await
    {
        Ok(n) => n.to_string().into_response(),
        Err(e) => db_error(e),
    }
}

async fn add_pid(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-pid", HeaderValue::from(std::process::id()));
    response
}
// ANCHOR_END: all
