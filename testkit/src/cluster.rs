//! [`RedisCluster`]: a throw-away Redis Cluster (3 primaries, 3 replicas) of
//! `redis-server` processes on loopback, for tests that need slots spread
//! over several nodes and a failover.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::{free_port, fresh_temp_dir, log_tail, ping, require_binary, LOG_TAIL_LINES};

/// Nodes in the cluster: 3 primaries, each with one replica.
const NODES: usize = 6;
/// `cluster-node-timeout` in ms: a dead primary is replaced within seconds.
pub const NODE_TIMEOUT_MS: u64 = 1000;
/// How long [`RedisCluster::start`] waits for the cluster to become `ok`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A node's role in the cluster, as `CLUSTER NODES` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves slots (a master).
    Primary,
    /// Replicates a primary.
    Replica,
}

/// One node as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's cluster id.
    pub id: String,
    /// Its port on `127.0.0.1`.
    pub port: u16,
    /// Primary or replica.
    pub role: Role,
    /// Whether the cluster flags it as failed (`fail` or `fail?`).
    pub failed: bool,
    /// The id of its primary (replicas only).
    pub primary_id: Option<String>,
    /// The slot ranges it serves (inclusive; primaries only).
    pub slots: Vec<(u16, u16)>,
}

/// A Redis Cluster of six `redis-server` processes (3 primaries + 3
/// replicas) on free loopback ports, created with `redis-cli --cluster
/// create` and waited on until every node reports `cluster_state:ok`, all
/// 16384 slots are covered and every replica is in sync. Persistence is off;
/// `cluster-node-timeout` is [`NODE_TIMEOUT_MS`], so a killed primary's
/// replica takes over within a few seconds.
///
/// Dropping it kills every process and removes its directory.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Mutex<Vec<Option<Child>>>,
}

impl RedisCluster {
    /// Starts the six nodes, creates the cluster and waits until it is ready.
    ///
    /// # Panics
    ///
    /// Panics loudly if `redis-server` or `redis-cli` is missing (tests never
    /// skip), or if the cluster is not ready within 30 s (with the logs'
    /// tails).
    pub fn start() -> RedisCluster {
        require_binary("redis-server");
        require_binary("redis-cli");
        let dir = fresh_temp_dir("synckairos-redis-cluster");
        let mut cluster = RedisCluster {
            dir,
            ports: Vec::new(),
            children: Mutex::new(Vec::new()),
        };
        for i in 0..NODES {
            let (port, child) = cluster.spawn_node(i);
            cluster.ports.push(port);
            cluster.children.lock().expect("lock").push(Some(child));
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("synckairos-testkit: redis-cli does not run: {e}"));
        if !out.status.success() {
            cluster.panic_with_logs(&format!(
                "redis-cli --cluster create failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_ready(&cluster.ports.clone(), READY_TIMEOUT);
        cluster
    }

    /// Spawns node `i` on a free port (its cluster bus on another free port)
    /// and waits until it answers `PING`.
    fn spawn_node(&self, i: usize) -> (u16, Child) {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let bus = free_port();
            if bus == port {
                continue;
            }
            let log = self.dir.join(format!("node-{i}.log"));
            let log_out = File::create(&log).expect("a node log file");
            let log_err = log_out.try_clone().expect("a log handle");
            let node_dir = self.dir.join(format!("node-{i}"));
            fs::create_dir_all(&node_dir).expect("a node dir");
            let mut child = Command::new("redis-server")
                .arg("--port")
                .arg(port.to_string())
                .arg("--cluster-port")
                .arg(bus.to_string())
                .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .arg("--cluster-node-timeout")
                .arg(NODE_TIMEOUT_MS.to_string())
                .args(["--appendonly", "no", "--save", ""])
                .arg("--dir")
                .arg(&node_dir)
                .current_dir(&node_dir)
                .stdin(Stdio::null())
                .stdout(log_out)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("synckairos-testkit: cannot spawn redis-server: {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "node {i} on port {port} exited ({status}):\n{}",
                        log_tail(&log, LOG_TAIL_LINES)
                    );
                    break;
                }
                if ping(port) {
                    return (port, child);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("node {i} on port {port} did not answer PING within 10 s");
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("synckairos-testkit: cannot start a cluster node: {last}");
    }

    /// The seed URLs, `redis://127.0.0.1:<port>/`, of every node started
    /// (killed ones included: a client must cope with a dead seed).
    pub fn seed_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// The ports of every node started.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The ports of the nodes whose process is running.
    pub fn live_ports(&self) -> Vec<u16> {
        let mut children = self.children.lock().expect("lock");
        self.ports
            .iter()
            .zip(children.iter_mut())
            .filter_map(|(p, c)| {
                let running = c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                running.then_some(*p)
            })
            .collect()
    }

    /// The topology as a running node sees it (`CLUSTER NODES`).
    ///
    /// # Panics
    ///
    /// Panics if no node answers.
    pub fn nodes(&self) -> Vec<Node> {
        for port in self.live_ports() {
            if let Ok(text) = query_string(port, &["CLUSTER", "NODES"]) {
                return parse_nodes(&text);
            }
        }
        panic!("synckairos-testkit: no cluster node answers CLUSTER NODES");
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        for port in self.live_ports() {
            if let Ok(v) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query::<u16>(&mut connect(port).expect("a connection"))
            {
                return v;
            }
        }
        panic!("synckairos-testkit: no cluster node answers CLUSTER KEYSLOT");
    }

    /// The port of the primary that serves `slot` (not flagged failed), if
    /// any.
    pub fn primary_of_slot(&self, slot: u16) -> Option<u16> {
        self.nodes()
            .into_iter()
            .find(|n| {
                n.role == Role::Primary
                    && !n.failed
                    && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .map(|n| n.port)
    }

    /// The port of the primary that serves `key`'s slot.
    ///
    /// # Panics
    ///
    /// Panics if no primary serves it.
    pub fn primary_of_key(&self, key: &str) -> u16 {
        let slot = self.slot_of(key);
        self.primary_of_slot(slot)
            .unwrap_or_else(|| panic!("synckairos-testkit: no primary serves slot {slot}"))
    }

    /// The ports of the primaries that serve `keys`' slots (see
    /// [`RedisCluster::primary_of_key`]).
    pub fn primaries_of_keys<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> BTreeSet<u16> {
        keys.into_iter()
            .map(|k| self.primary_of_key(k.as_ref()))
            .collect()
    }

    /// Kills the node on `port` with SIGKILL and reaps it.
    ///
    /// # Panics
    ///
    /// Panics if `port` is not a node of this cluster.
    pub fn kill(&self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .unwrap_or_else(|| panic!("synckairos-testkit: port {port} is not a cluster node"));
        if let Some(mut child) = self.children.lock().expect("lock")[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `slot` is served by a primary other than `old_port` (its
    /// replica was promoted) and every live node reports `cluster_state:ok`
    /// with all slots covered. Returns the new primary's port.
    ///
    /// # Panics
    ///
    /// Panics if that does not happen within `timeout`.
    pub fn wait_for_failover(&self, slot: u16, old_port: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.primary_of_slot(slot).filter(|&p| p != old_port) {
                if self.live_ports().iter().all(|&port| cluster_ok(port)) {
                    return p;
                }
            }
            if Instant::now() > deadline {
                self.panic_with_logs(&format!(
                    "slot {slot} was not taken over from port {old_port} within {timeout:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every node in `ports` reports `cluster_state:ok` with all
    /// 16384 slots ok, and every replica's link to its primary is up and
    /// synced.
    fn wait_ready(&self, ports: &[u16], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let all_ok = ports.iter().all(|&p| cluster_ok(p))
                && ports.iter().all(|&p| replica_synced(p))
                && {
                    let nodes = self.nodes();
                    nodes.len() == NODES
                        && nodes.iter().filter(|n| n.role == Role::Primary).count() == NODES / 2
                };
            if all_ok {
                return;
            }
            if Instant::now() > deadline {
                self.panic_with_logs(&format!("the cluster was not ready within {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn panic_with_logs(&self, what: &str) -> ! {
        let logs: Vec<String> = (0..self.ports.len())
            .map(|i| {
                let log = self.dir.join(format!("node-{i}.log"));
                format!(
                    "----- node {i} (port {}) {} -----\n{}",
                    self.ports[i],
                    log.display(),
                    log_tail(&log, 15)
                )
            })
            .collect();
        panic!(
            "\n\n==========================================================\n\
             synckairos-testkit: redis cluster: {what}\n{}\n\
             ==========================================================\n",
            logs.join("\n")
        );
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut().filter_map(Option::take) {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `per_shard` ids on each of `shards` shards, in shard order: candidates
/// `id(1)`, `id(2)`, … each go to shard `shard_of(&candidate)` until every
/// shard has its share (later candidates for a full shard are skipped).
/// With a cluster this puts work on every primary.
pub fn ids_on_every_shard(
    shards: u16,
    per_shard: usize,
    id: impl Fn(u128) -> String,
    shard_of: impl Fn(&str) -> u16,
) -> Vec<String> {
    let mut by_shard: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut n = 0u128;
    while by_shard.len() < shards as usize || by_shard.values().any(|v| v.len() < per_shard) {
        n += 1;
        let candidate = id(n);
        let v = by_shard.entry(shard_of(&candidate)).or_default();
        if v.len() < per_shard {
            v.push(candidate);
        }
    }
    by_shard.into_values().flatten().collect()
}

/// A plain connection to one node, with short timeouts.
fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(conn)
}

fn query_string(port: u16, args: &[&str]) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut connect(port)?)
}

/// Whether the node on `port` reports `cluster_state:ok` with every slot ok.
fn cluster_ok(port: u16) -> bool {
    query_string(port, &["CLUSTER", "INFO"]).is_ok_and(|info| {
        info.lines().any(|l| l.trim() == "cluster_state:ok")
            && info.lines().any(|l| l.trim() == "cluster_slots_ok:16384")
    })
}

/// Whether the node on `port` is a primary, or a replica whose link is up
/// and not syncing.
fn replica_synced(port: u16) -> bool {
    query_string(port, &["INFO", "replication"]).is_ok_and(|info| {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                .map(str::to_string)
        };
        match field("role").as_deref() {
            Some("master") => true,
            Some("slave") => {
                field("master_link_status").as_deref() == Some("up")
                    && field("master_sync_in_progress").as_deref() == Some("0")
            }
            _ => false,
        }
    })
}

/// Parses `CLUSTER NODES`.
fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split(['@', ',']).next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let role = if flags.contains(&"master") {
                Role::Primary
            } else {
                Role::Replica
            };
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(Node {
                id: f[0].to_string(),
                port,
                role,
                failed: flags.iter().any(|fl| fl.starts_with("fail")),
                primary_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b 127.0.0.1:7001@17001 slave a 0 0 1 connected\n\
                    c 127.0.0.1:7002@17002 master,fail - 0 0 2 disconnected 5461 5462-10922\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].role, Role::Primary);
        assert_eq!(nodes[0].slots, vec![(0, 5460)]);
        assert_eq!(nodes[1].role, Role::Replica);
        assert_eq!(nodes[1].primary_id.as_deref(), Some("a"));
        assert!(nodes[2].failed);
        assert_eq!(nodes[2].slots, vec![(5461, 5461), (5462, 10922)]);
        assert_eq!(nodes[2].port, 7002);
    }

    #[test]
    fn ids_fill_every_shard_in_order() {
        let ids = ids_on_every_shard(3, 2, |n| n.to_string(), |s| s.parse::<u16>().unwrap() % 3);
        assert_eq!(ids, ["3", "6", "1", "4", "2", "5"]);
    }
}
