//! A private Mosquitto for fault tests: its own config, port, persistence folder and log, so a
//! test can kill and restart it without disturbing other tests (or the broker `.ci/run` starts).
//!
//! The configuration is the shipped `deploy/mosquitto/mosquitto.conf` without TLS, passwords
//! and ACL: persistence on (saved every 60 s and on SIGTERM), `set_tcp_nodelay true`, 8 MiB
//! message limit, deep per-client queues, anonymous clients, one listener on 127.0.0.1.

use std::{
    fs::OpenOptions,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running (or stopped, between a kill and a restart) private Mosquitto.
pub struct Mosquitto {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

/// How long a (re)started Mosquitto may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

impl Mosquitto {
    /// Writes the config into a fresh temp folder and starts Mosquitto on a free port; returns
    /// once it accepts connections. `tag` names the folder (`slim-mosquitto-{tag}-…`).
    pub fn start(tag: &str) -> Self {
        Self::start_with(tag, "")
    }

    /// As [`Mosquitto::start`], with `extra` appended to the configuration (e.g. a bridge:
    /// `connection`, `address`, `topic` lines).
    pub fn start_with(tag: &str, extra: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(&format!("slim-mosquitto-{tag}-"))
            .tempdir()
            .expect("the broker's temp folder can be created");
        // Mosquitto started as root drops to its own user, which must be able to save its
        // persistence file here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("the broker's temp folder can be opened up");
        let port = free_port();
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "# Written by slim_tests::mosquitto: deploy/mosquitto/mosquitto.conf minus TLS/ACL.\n\
                 per_listener_settings false\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {}/\n\
                 autosave_interval 60\n\
                 message_size_limit 8388608\n\
                 max_queued_messages 100000\n\
                 max_queued_bytes 268435456\n\
                 set_tcp_nodelay true\n\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n\
                 log_type notice\n\
                 log_type information\n\
                 log_timestamp_format %H:%M:%S\n\
                 listener {port} 127.0.0.1\n\
                 {extra}",
                dir.path().display()
            ),
        )
        .expect("the broker's config can be written");
        let mut broker = Self {
            child: None,
            dir,
            port,
        };
        broker.spawn();
        broker
    }

    /// The broker's URL, `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp folder holding the config, the persistence file and the log; removed on drop,
    /// so a test may keep other state (e.g. agents' durable state) under it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id while it runs; `None` between a kill and a restart.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its resident memory (VmRSS), KiB, while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(vm_rss_kib)
    }

    /// Kills it with SIGKILL, as a crash would: whatever it has not saved (everything since the
    /// last autosave) is lost. Returns once the process has exited.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
    }

    /// Stops it with SIGTERM, as an operator would: it saves its persistence file first.
    /// Returns once the process has exited.
    pub fn term(&mut self) {
        self.signal("-TERM");
    }

    /// Starts it again on the same port with the same persistence folder (stopping it with
    /// SIGTERM first if it still runs); returns once it accepts connections.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.term();
        }
        self.spawn();
    }

    /// Everything it has logged (every run appends to the same file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn signal(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("the broker's log can be opened");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start mosquitto ({e}): these tests need Mosquitto 2 on the PATH \
                     (Debian/Ubuntu: apt-get install mosquitto; it is not skipped)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "mosquitto exited ({status}) instead of listening on {}:\n{}",
                    self.port,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within {LISTEN_TIMEOUT:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `dir` (a TempDir) is removed after this, once the broker has exited.
    }
}

/// VmRSS of process `pid` from `/proc/{pid}/status`, KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    rss_from(&format!("/proc/{pid}/status"))
}

/// VmRSS of this process (the tests run the coordinator and agents in it), KiB.
pub fn own_rss_kib() -> Option<u64> {
    rss_from("/proc/self/status")
}

fn rss_from(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A port that is free now, below the kernel's ephemeral range (32768 and up by default), so
/// no client's outgoing connection takes it while the broker is down between kill and restart.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for attempt in 0u64..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
