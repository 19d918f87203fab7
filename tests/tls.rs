//! HTTPS on the counter (`TLS_CERT`, `TLS_KEY`, `TLS_PORT`), driven by real clients: curl,
//! `openssl s_client`, and Python's `http.client`/`ssl` (tests/clients/https_load.py). The
//! certificate is a fresh self-signed one made by `openssl req` for each test.

use hotrestart_testkit as common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
    (cert, key)
}

/// The counter with HTTPS on a second pre-bound listener; returns it, the HTTPS port and the
/// certificate (the CA for clients).
fn https_counter(env: &[(&str, &str)]) -> Option<(Service, u16, PathBuf)> {
    if !require("openssl", "apt-get install openssl") || !require("curl", "apt-get install curl") {
        return None;
    }
    let mut svc = Service::prepare("counter", env);
    let (cert, key) = certificate(svc.dir.path());
    let port = svc.add_listener("https");
    svc.env
        .push(("TLS_CERT".into(), cert.to_str().unwrap().into()));
    svc.env
        .push(("TLS_KEY".into(), key.to_str().unwrap().into()));
    svc.env.push(("TLS_PORT".into(), port.to_string()));
    svc.first_pid = svc.spawn();
    Some((svc, port, cert))
}

/// `curl` over HTTPS, verifying the certificate: (exit code, body, x-pid).
fn curl(port: u16, ca: &Path, method: &str, path: &str, limit: &str) -> (i32, String, u32) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", limit, "--cacert"])
        .arg(ca)
        .args(["-X", method, &format!("https://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = text
        .lines()
        .find_map(|l| l.strip_prefix("x-pid: "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (out.status.code().unwrap_or(-1), body, pid)
}

#[test]
fn twenty_restarts_under_https_keep_alive_load_fail_no_request_and_keep_the_count() {
    let Some((svc, port, ca)) = https_counter(&[]) else {
        return;
    };
    let out = {
        let (code, out) = run_client(
            "https_load.py",
            &[
                svc.port.to_string(),
                port.to_string(),
                ca.to_str().unwrap().into(),
                "20".into(),
            ],
            Duration::from_secs(120),
        );
        assert_eq!(code, Some(0), "{out}\nlog:\n{}", svc.log_text());
        out
    };
    let acked: u64 = out
        .split_whitespace()
        .skip_while(|w| *w != "acked")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(acked > 0, "{out}");
    assert_eq!(
        svc.count(),
        acked,
        "every acknowledged hit is counted once; {out}"
    );
    eprintln!("{out}");
}

#[test]
fn a_silent_client_blocks_no_one_and_is_dropped_at_the_handshake_timeout() {
    let Some((svc, port, ca)) = https_counter(&[("HOTRESTART_TLS_HANDSHAKE_TIMEOUT", "1s")]) else {
        return;
    };
    // Connects and says nothing: under a handshake done in the accept loop, every other
    // client would wait behind it.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let (code, body, pid) = curl(port, &ca, "GET", "/count", "5");
    assert_eq!(
        (code, body.as_str(), pid),
        (0, "0", svc.pid()),
        "answered beside the silent client"
    );
    // The silent one is closed at its own timeout (EOF or reset), not kept forever.
    let start = Instant::now();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut silent, &mut byte);
    assert!(
        matches!(read, Ok(0) | Err(_)) && start.elapsed() < WAIT,
        "the silent connection was dropped: {read:?} after {:?}",
        start.elapsed()
    );
    assert!(
        !svc.log_text().contains("accept failed"),
        "a slow handshake is not an accept error"
    );
}

/// `openssl s_client` with `-sess_out` or `-sess_in`: whether the session was `New` or `Reused`.
fn s_client(port: u16, version: &str, session: &Path, save: bool) -> String {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            version,
            "-ign_eof",
        ])
        .arg(if save { "-sess_out" } else { "-sess_in" })
        .arg(session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"GET /count HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .unwrap();
        // Kept open until the server closes: TLS 1.3 tickets arrive after the handshake.
        let pid = child.id();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        drop(stdin);
        drop(child);
        wait_exit(pid, WAIT);
        out.lines()
            .find(|l| l.starts_with("New,") || l.starts_with("Reused,"))
            .unwrap_or("no session line")
            .to_owned()
    }
}

#[test]
fn tls_sessions_resume_across_a_restart_in_tls_1_3_and_1_2() {
    let Some((svc, port, _)) = https_counter(&[]) else {
        return;
    };
    for version in ["-tls1_3", "-tls1_2"] {
        let session = svc.dir.path().join(format!("session{version}.pem"));
        let first = s_client(port, version, &session, true);
        assert!(first.starts_with("New,"), "{version}: {first}");
        let old = svc.pid();
        let new = svc.hot_restart();
        assert_ne!(old, new);
        let again = s_client(port, version, &session, false);
        assert!(
            again.starts_with("Reused,"),
            "{version}: the successor resumed the session: {again}"
        );
    }
    assert!(
        !svc.log_text().to_lowercase().contains("secret"),
        "no key material in the log"
    );
}

#[test]
fn a_broken_certificate_rolls_the_restart_back_and_https_serves_on() {
    let Some((svc, port, cert_file)) = https_counter(&[]) else {
        return;
    };
    // The clients trust a copy: the deployed file is about to break.
    let ca = svc.dir.path().join("ca.pem");
    std::fs::copy(&cert_file, &ca).unwrap();
    let pid = svc.pid();
    let (_, _, answered) = curl(port, &ca, "POST", "/hit", "5");
    assert_eq!(answered, pid);
    // The deploy replaces the certificate with one that does not parse.
    let cert = svc.dir.path().join("cert.pem");
    let good = std::fs::read(&cert).unwrap();
    std::fs::write(
        &cert,
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    svc.signal(pid, libc::SIGHUP);
    let status = svc.wait_rollbacks(1);
    assert!(status.rollbacks()[0].contains("exited"), "{status:?}");
    assert!(
        svc.log_text().contains("TLS: ") && svc.log_text().contains("cert.pem"),
        "one clear line names the file; log:\n{}",
        svc.log_text()
    );
    let (code, body, answered) = curl(port, &ca, "GET", "/count", "5");
    assert_eq!(
        (code, body.as_str(), answered),
        (0, "1", pid),
        "the old process serves HTTPS on"
    );
    // The certificate fixed, the next restart takes it.
    std::fs::write(&cert, good).unwrap();
    let new = svc.hot_restart();
    let (code, body, answered) = curl(port, &ca, "GET", "/count", "5");
    assert_eq!((code, body.as_str(), answered), (0, "1", new));
}

#[test]
fn alpn_serves_http2_over_tls_and_a_restart_keeps_answering() {
    let Some((svc, port, ca)) = https_counter(&[]) else {
        return;
    };
    let version = || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                "--http2",
                "--max-time",
                "5",
                "--cacert",
            ])
            .arg(&ca)
            .arg(format!("https://127.0.0.1:{port}/count"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(version(), "2 200", "ALPN h2");
    svc.hot_restart();
    assert_eq!(version(), "2 200", "ALPN h2, from the successor");
}
