//! Processes of the tests: free ports, the workspace's built binaries, commands under a
//! deadline, a child process with its log in a file (killed on drop, its log tail printed
//! when the test failed), and memory figures from /proc.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released; fine for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process stopped with SIGSTOP (a lagging or hung server); SIGCONT when dropped, so a
/// failing test leaves none stopped.
pub struct Stopped(u32);

impl Stopped {
    pub fn new(pid: u32) -> Stopped {
        let ok = Command::new("kill").args(["-STOP", &pid.to_string()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid} failed");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Path of a binary built by cargo in this workspace's target dir (for process tests).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(p.is_file(), "{} not built: run `cargo build --workspace --bins` (make test does)", p.display());
    p
}

/// Runs `cmd` to its end (feeding it `stdin`), killing it after `limit`: its output, or why
/// there is none.
pub fn output_within_stdin(cmd: &mut Command, stdin: Option<&str>, limit: Duration) -> Result<Output, String> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {program}: {e}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_string();
        std::thread::spawn(move || drop(pipe.write_all(input.as_bytes())));
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(tx.send(child.wait_with_output())));
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            let out = rx.recv_timeout(Duration::from_secs(5)).ok().and_then(Result::ok);
            let text = out.map(|o| format!("{}{}", text(&o.stdout), text(&o.stderr))).unwrap_or_default();
            Err(format!("{program} did not finish within {limit:?}: {text}"))
        }
    }
}

/// [`output_within_stdin`] without input.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    output_within_stdin(cmd, None, limit)
}

/// Lossy UTF-8 of command output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A long-running child process whose stdout and stderr go to a log file in its own temp
/// dir. Killed on drop; if the test is failing, the last lines of its log are printed.
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `cmd` (its stdin null, its output to `<dir>/<name>.log`), in a fresh temp dir
    /// that [`dir`](Self::dir) returns (write config files there before with [`prepare`](Self::prepare)).
    pub fn spawn(name: &str, dir: tempfile::TempDir, mut cmd: Command) -> Self {
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({:?}): {e}", cmd.get_program()));
        ChildProcess { name: name.into(), child: Some(child), dir, log }
    }

    /// A temp dir with `files` (name, contents) written into it, for [`spawn`](Self::spawn).
    pub fn prepare(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        dir
    }

    /// Starts the same command line again after [`kill9`](Self::kill9) or [`terminate`](Self::terminate).
    pub fn respawn(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let file = std::fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        self.child = Some(cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap());
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (bounded by `limit`) for the exit status; SIGKILL after it.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_ref()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        self.wait_exit(limit)
    }

    /// Waits (bounded by `limit`) for the process to exit by itself; SIGKILL after it.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = c.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- {} log (last {} lines) ---", self.name, tail.len());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Peak resident set size of process `pid` so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM:") * 1024
}

/// Resident set size of process `pid` now (`VmRSS`), in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS:") * 1024
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
