//! Counting the commands clients send to a test `redis-server`.
//!
//! [`Monitor`] opens a raw `MONITOR` connection to a [`RedisServer`] on a
//! background thread and tallies every command line the server echoes. It
//! counts what a per-command bill counts (a hosted Redis that charges per
//! request): each command a *client* sends is one, so one `EVALSHA` is one
//! command however many commands its script runs. Lines a script produced
//! (`[0 lua]` in `MONITOR` output) are therefore left out, and so are the
//! monitor's own commands (the `ECHO` markers it uses to synchronise).
//!
//! Limits inherited from `MONITOR`: the server does not echo administrative
//! commands (`CONFIG`, `DEBUG`, `CLIENT KILL`, ...), `EXEC` or `AUTH`; a
//! bill would count those, but no SyncKairos service sends them in steady
//! state.
//!
//! Speed and cost targets are asserted with these counts rather than with
//! timings, so they hold on a loaded machine:
//!
//! ```no_run
//! use synckairos_testkit::{monitor::Monitor, RedisServer};
//! let server = RedisServer::start();
//! let monitor = Monitor::start(&server);
//! // ... run the code under test ...
//! let counts = monitor.counts();
//! assert!(counts.total <= 120, "too many commands:\n{counts}");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::RedisServer;

/// How long [`Monitor::start`] and [`Monitor::counts`] wait for the server.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefix of the `ECHO` markers the monitor sends to synchronise.
const MARKER_PREFIX: &str = "synckairos-testkit-monitor-marker-";

/// Commands counted since [`Monitor::start`] or the last [`Monitor::reset`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every client-issued command.
    pub total: u64,
    /// Per command name, lower case (`"evalsha"`, `"xreadgroup"`).
    pub by_command: BTreeMap<String, u64>,
    /// Per client address (`"127.0.0.1:53122"`), then per command name.
    pub by_addr: BTreeMap<String, BTreeMap<String, u64>>,
    /// `EVALSHA` calls per script SHA1 (lower case hex): which script ran,
    /// which `by_command` cannot tell apart from background scripts.
    pub evalsha_by_sha: BTreeMap<String, u64>,
}

impl Counts {
    /// How many times `command` (any case) was sent; 0 when never.
    pub fn of(&self, command: &str) -> u64 {
        self.by_command
            .get(&command.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// How many `EVALSHA` calls ran the script whose SHA1 is `sha`.
    pub fn evalsha_of(&self, sha: &str) -> u64 {
        self.evalsha_by_sha
            .get(&sha.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    fn add(&mut self, addr: &str, command: &str) {
        self.total += 1;
        *self.by_command.entry(command.to_string()).or_default() += 1;
        *self
            .by_addr
            .entry(addr.to_string())
            .or_default()
            .entry(command.to_string())
            .or_default() += 1;
    }
}

/// A readable summary for test failure messages: the total, then each
/// command and each client, the busiest first.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn sorted(map: &BTreeMap<String, u64>) -> Vec<(&String, &u64)> {
            let mut v: Vec<_> = map.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v
        }
        writeln!(f, "{} client command(s)", self.total)?;
        for (command, n) in sorted(&self.by_command) {
            writeln!(f, "  {n:>8}  {command}")?;
        }
        for (addr, commands) in &self.by_addr {
            let total: u64 = commands.values().sum();
            let detail: Vec<String> = sorted(commands)
                .into_iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect();
            writeln!(f, "  client {addr}: {total} ({})", detail.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct State {
    counts: Counts,
    /// The highest marker number seen so far.
    marker_seen: u64,
    /// Why the reader stopped, once it has.
    ended: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// A `MONITOR` connection counting client-issued commands; see the
/// [module documentation](self).
///
/// Dropping it closes the connection and joins the reader thread.
pub struct Monitor {
    shared: Arc<Shared>,
    /// The connection the markers go out on (its commands are not counted).
    control: Mutex<Control>,
    /// A handle on the `MONITOR` socket, to shut it down on drop.
    socket: TcpStream,
    reader: Option<JoinHandle<()>>,
}

struct Control {
    stream: BufReader<TcpStream>,
    next_marker: u64,
}

impl RedisServer {
    /// Starts a [`Monitor`] on this server; see [`Monitor::start`].
    pub fn monitor(&self) -> Monitor {
        Monitor::start(self)
    }
}

impl Monitor {
    /// Connects to `server`, sends `MONITOR` and starts counting once the
    /// server confirmed it: every command that completes after this returns
    /// is counted.
    ///
    /// # Panics
    ///
    /// Panics if the server does not answer within 10 seconds.
    pub fn start(server: &RedisServer) -> Monitor {
        let port = server.port();
        let connect = |what: &str| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| {
                panic!("synckairos-testkit monitor: cannot open the {what} connection to redis on port {port}: {e}")
            });
            s.set_nodelay(true).ok();
            s
        };
        let control = connect("control");
        let control_addr = control
            .local_addr()
            .expect("the control connection's local address")
            .to_string();
        control
            .set_read_timeout(Some(SYNC_TIMEOUT))
            .expect("a read timeout");

        let mut socket = connect("MONITOR");
        socket.write_all(b"MONITOR\r\n").expect("sending MONITOR");
        let mut reader = BufReader::new(socket.try_clone().expect("a second socket handle"));
        socket
            .set_read_timeout(Some(SYNC_TIMEOUT))
            .expect("a read timeout");
        let mut first = Vec::new();
        reader
            .read_until(b'\n', &mut first)
            .unwrap_or_else(|e| panic!("synckairos-testkit monitor: no answer to MONITOR: {e}"));
        assert!(
            first.starts_with(b"+OK"),
            "synckairos-testkit monitor: MONITOR answered {:?}",
            String::from_utf8_lossy(&first)
        );
        socket.set_read_timeout(None).expect("no read timeout");

        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("redis-monitor".into())
            .spawn(move || read_loop(reader, &control_addr, &thread_shared))
            .expect("spawning the monitor thread");
        Monitor {
            shared,
            control: Mutex::new(Control {
                stream: BufReader::new(control),
                next_marker: 1,
            }),
            socket,
            reader: Some(handle),
        }
    }

    /// The commands counted since [`Monitor::start`] or the last
    /// [`Monitor::reset`], including every command that completed before
    /// this call (it waits until the monitor stream has caught up).
    ///
    /// # Panics
    ///
    /// Panics if the server stopped answering or the stream does not catch
    /// up within 10 seconds.
    pub fn counts(&self) -> Counts {
        self.sync();
        self.shared
            .state
            .lock()
            .expect("monitor state")
            .counts
            .clone()
    }

    /// Forgets the counts so far (after catching up, as [`Monitor::counts`]
    /// does): later counts start from zero.
    pub fn reset(&self) {
        self.sync();
        self.shared.state.lock().expect("monitor state").counts = Counts::default();
    }

    /// Sends a numbered `ECHO` marker and waits until `MONITOR` echoed it:
    /// every command that completed before is then counted.
    fn sync(&self) {
        let mut control = self.control.lock().expect("monitor control");
        let n = control.next_marker;
        control.next_marker += 1;
        let marker = format!("{MARKER_PREFIX}{n}");
        let request = format!("*2\r\n$4\r\nECHO\r\n${}\r\n{marker}\r\n", marker.len());
        let stream = control.stream.get_mut();
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("synckairos-testkit monitor: sending the marker: {e}"));
        // The reply is `$<len>\r\n<marker>\r\n`: two lines.
        for _ in 0..2 {
            let mut line = Vec::new();
            control
                .stream
                .read_until(b'\n', &mut line)
                .unwrap_or_else(|e| {
                    panic!("synckairos-testkit monitor: reading the marker reply: {e}")
                });
            assert!(
                !line.is_empty() && !line.starts_with(b"-"),
                "synckairos-testkit monitor: ECHO answered {:?}",
                String::from_utf8_lossy(&line)
            );
        }
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut state = self.shared.state.lock().expect("monitor state");
        while state.marker_seen < n {
            if let Some(why) = &state.ended {
                panic!("synckairos-testkit monitor: the MONITOR connection ended: {why}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "synckairos-testkit monitor: MONITOR did not echo marker {n} within {SYNC_TIMEOUT:?}"
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .expect("monitor state")
                .0;
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Ok(control) = self.control.get_mut() {
            let _ = control.stream.get_ref().shutdown(Shutdown::Both);
        }
        if let Some(handle) = self.reader.take() {
            let _ = handle.join();
        }
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

fn read_loop(mut reader: BufReader<TcpStream>, control_addr: &str, shared: &Shared) {
    let mut line = Vec::new();
    let why = loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break "connection closed".to_string(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
        let text = String::from_utf8_lossy(&line);
        let Some(parsed) = parse_line(&text) else {
            continue;
        };
        let mut state = shared.state.lock().expect("monitor state");
        match parsed {
            Line { addr: "lua", .. } => {}
            Line {
                addr,
                command,
                first_arg,
            } if addr == control_addr => {
                if command == "echo" {
                    if let Some(n) = first_arg
                        .and_then(|a| a.strip_prefix(MARKER_PREFIX))
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        state.marker_seen = state.marker_seen.max(n);
                        shared.changed.notify_all();
                    }
                }
            }
            Line {
                addr,
                command,
                first_arg,
            } => {
                if let (true, Some(sha)) = (command == "evalsha", first_arg) {
                    *state
                        .counts
                        .evalsha_by_sha
                        .entry(sha.to_ascii_lowercase())
                        .or_default() += 1;
                }
                state.counts.add(addr, &command);
            }
        }
    };
    let mut state = shared.state.lock().expect("monitor state");
    state.ended = Some(why);
    shared.changed.notify_all();
}

/// One `MONITOR` line: `+<time> [<db> <addr>] "<command>" "<arg>" ...`.
#[derive(Debug, PartialEq, Eq)]
struct Line<'a> {
    /// `127.0.0.1:53122`, `unix:/path` or `lua`.
    addr: &'a str,
    /// Lower case.
    command: String,
    /// The first argument, unescaped only if it needed no escaping.
    first_arg: Option<&'a str>,
}

fn parse_line(text: &str) -> Option<Line<'_>> {
    let rest = text.strip_prefix('+')?;
    let open = rest.find('[')?;
    let close = open + rest[open..].find(']')?;
    let inside = &rest[open + 1..close];
    let addr = inside.split_once(' ')?.1;
    let mut words = quoted_words(&rest[close + 1..]);
    let command = words.next()?.to_ascii_lowercase();
    let first_arg = words.next();
    Some(Line {
        addr,
        command,
        first_arg,
    })
}

/// The `"..."` words of a `MONITOR` line, as written (escapes left in).
fn quoted_words(s: &str) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && bytes[i] != b'"' {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            if bytes[j] == b'\\' {
                j += 1;
            }
            j += 1;
        }
        let end = j.min(bytes.len());
        i = end + 1;
        Some(&s[start..end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_and_script_lines() {
        let client =
            parse_line("+1700000000.123456 [0 127.0.0.1:53122] \"SET\" \"k\" \"v\\\"x\"\r\n")
                .expect("a client line");
        assert_eq!(client.addr, "127.0.0.1:53122");
        assert_eq!(client.command, "set");
        assert_eq!(client.first_arg, Some("k"));
        let lua =
            parse_line("+1700000000.123456 [0 lua] \"xadd\" \"s\" \"*\"\r\n").expect("a lua line");
        assert_eq!(lua.addr, "lua");
        assert_eq!(lua.command, "xadd");
        assert!(parse_line("+OK\r\n").is_none());
    }

    #[test]
    fn summary_lists_busiest_first() {
        let mut c = Counts::default();
        c.add("a:1", "get");
        c.add("a:1", "set");
        c.add("a:1", "set");
        let text = c.to_string();
        assert!(text.starts_with("3 client command(s)\n"), "{text}");
        assert!(
            text.find("set").unwrap() < text.find("get").unwrap(),
            "{text}"
        );
        assert!(text.contains("client a:1: 3 (set=2, get=1)"), "{text}");
        assert_eq!(c.of("SET"), 2);
        assert_eq!(c.of("del"), 0);
    }
}
