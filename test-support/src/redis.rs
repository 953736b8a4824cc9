//! `redis-server` processes of a test's own: a single server it can kill and
//! restart, and a Redis Cluster, on free loopback ports, stopped by PID.
//!
//! The binaries are `redis-server` and `redis-cli` from `PATH`, or the ones
//! `REDIS_SERVER_BIN` and `REDIS_CLI_BIN` name.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::PATIENCE;
use crate::process::Process;

/// The `redis-server` binary.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// The `redis-cli` binary.
pub fn cli_binary() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A fresh directory under the system's temporary directory.
fn fresh_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lp-{what}-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Runs `redis-cli` with `args` against `port` and returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new(cli_binary())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", cli_binary()));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// One `redis-server` on a free port, with a directory of its own (its RDB
/// and AOF stay there across restarts).
pub struct RedisServer {
    process: Option<Process>,
    port: u16,
    dir: PathBuf,
    config: Option<PathBuf>,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server with these extra arguments (such as
    /// `["--appendonly", "yes"]`); by default it saves nothing.
    pub async fn start(args: &[&str]) -> RedisServer {
        Self::start_with_config(None, args).await
    }

    /// Starts a server that reads `config` (written to a file in its
    /// directory, which a Sentinel rewrites) before the arguments.
    pub async fn start_with_config(config: Option<&str>, args: &[&str]) -> RedisServer {
        let dir = fresh_dir("redis");
        let config = config.map(|text| {
            let path = dir.join("redis.conf");
            std::fs::write(&path, text).expect("write the config");
            path
        });
        let mut server = RedisServer {
            process: None,
            port: free_port(),
            dir,
            config,
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        server.run().await;
        server
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Starts it (again) on its port, with its directory, and waits until
    /// it answers PING.
    pub async fn run(&mut self) {
        assert!(self.process.is_none(), "already running");
        let mut command = Command::new(server_binary());
        if let Some(config) = &self.config {
            command.arg(config);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {}: {err} (scripts/test.sh installs it)",
                    server_binary()
                )
            });
        self.process = Some(Process::new(child, "redis-server"));
        wait_for_ping(self.port).await;
    }

    /// `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Stops it with SIGTERM (a clean shutdown) and waits for it to exit.
    pub async fn stop(&mut self) {
        let process = self.process.take().expect("running");
        process.terminate().await;
    }

    /// Kills it with SIGKILL, as a crash: nothing is saved on the way out.
    pub async fn kill(&mut self) {
        let process = self.process.take().expect("running");
        let status = Command::new("kill")
            .args(["-KILL", &process.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        process.exit().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        drop(self.process.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until a server answers PING on `port`.
pub async fn wait_for_ping(port: u16) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if cli(port, &["ping"]) == "PONG" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server on port {port} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Redis Cluster of `primaries` primaries with `replicas` replicas each,
/// every node a `redis-server` of this test.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create` and
    /// waits until the cluster reports `cluster_state:ok` on every node.
    pub async fn start(primaries: usize, replicas: usize) -> RedisCluster {
        let count = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    // Replicas sync at once rather than after 5 s.
                    "--repl-diskless-sync-delay",
                    "0",
                    "--appendonly",
                    "no",
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new(cli_binary())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        loop {
            // Ok, every replica known as one everywhere (a replica starts
            // as an empty primary), and every replica in sync with its
            // primary (a replica that never synced does not fail over).
            let ok = cluster.nodes.iter().all(|node| {
                let nodes = node.cli(&["cluster", "nodes"]);
                let replication = node.cli(&["info", "replication"]);
                node.cli(&["cluster", "info"]).contains("cluster_state:ok")
                    && nodes.lines().filter(|line| line.contains("master")).count() == primaries
                    && nodes.lines().filter(|line| line.contains("slave")).count()
                        == primaries * replicas
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster never became ok"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&...`, fred's form.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port());
        for (n, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if n == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port()));
        }
        url
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to stop or kill one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The port of the primary that owns `key`'s slot, as the first node
    /// that answers sees it.
    pub fn primary_of(&self, key: &str) -> u16 {
        let any = self
            .nodes
            .iter()
            .find(|node| node.pid().is_some())
            .expect("a node running")
            .port();
        let slot: u16 = cli(any, &["cluster", "keyslot", key])
            .parse()
            .expect("a slot");
        let nodes = cli(any, &["cluster", "nodes"]);
        for line in nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|port| port.parse().ok())
                .expect("a port");
            for range in fields.iter().skip(8) {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(low), Ok(high)) = (low.parse::<u16>(), high.parse::<u16>()) {
                    if (low..=high).contains(&slot) {
                        return port;
                    }
                }
            }
        }
        panic!("no primary owns slot {slot}: {nodes}");
    }

    /// `CLUSTER FAILOVER` on every replica (a manual failover: each waits
    /// for its primary's writes), and waits until every one is a primary.
    pub async fn fail_over_every_replica(&self) {
        let replicas: Vec<u16> = self
            .nodes
            .iter()
            .filter(|node| node.cli(&["role"]).starts_with("slave"))
            .map(RedisServer::port)
            .collect();
        assert!(!replicas.is_empty(), "no replica to fail over");
        for port in &replicas {
            assert_eq!(cli(*port, &["cluster", "failover"]), "OK");
        }
        crate::eventually("every replica promoted", || {
            replicas
                .iter()
                .all(|port| cli(*port, &["role"]).starts_with("master"))
        })
        .await;
    }

    /// The port of a replica of the primary on `primary`.
    pub fn replica_of(&self, primary: u16) -> u16 {
        self.nodes
            .iter()
            .filter(|node| node.pid().is_some())
            .find(|node| {
                let role = node.cli(&["role"]);
                role.starts_with("slave")
                    && role.lines().any(|line| line.trim() == primary.to_string())
            })
            .map(RedisServer::port)
            .expect("a replica of that primary")
    }
}

/// A primary, a replica of it, and three Sentinels watching it under the
/// name `mymaster` (quorum 2, down after 1 s).
pub struct RedisSentinels {
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinels {
    /// The service name.
    pub const NAME: &'static str = "mymaster";

    /// Starts them and waits until every Sentinel knows the replica and
    /// the other Sentinels.
    pub async fn start() -> RedisSentinels {
        // Replicas sync at once rather than after 5 s, after the failover too.
        let primary =
            RedisServer::start(&["--appendonly", "no", "--repl-diskless-sync-delay", "0"]).await;
        let replica = RedisServer::start(&[
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--replicaof",
            "127.0.0.1",
            &primary.port().to_string(),
        ])
        .await;
        let config = format!(
            "sentinel monitor {name} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            name = Self::NAME,
            port = primary.port()
        );
        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            sentinels.push(RedisServer::start_with_config(Some(&config), &["--sentinel"]).await);
        }
        let set = RedisSentinels {
            servers: vec![primary, replica],
            sentinels,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE * 3;
        loop {
            let ready = set.sentinels.iter().all(|sentinel| {
                let replicas = sentinel.cli(&["sentinel", "replicas", Self::NAME]);
                let others = sentinel.cli(&["sentinel", "sentinels", Self::NAME]);
                replicas.contains("slave") && others.matches("127.0.0.1").count() >= 2
            });
            if ready {
                return set;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Sentinels never saw the replica and each other"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis-sentinel://127.0.0.1:S1?sentinelServiceName=mymaster&node=127.0.0.1:S2&...`.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={}",
            self.sentinels[0].port(),
            Self::NAME
        );
        for sentinel in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", sentinel.port()));
        }
        url
    }

    /// The port of the primary the Sentinels name now.
    pub fn primary_port(&self) -> u16 {
        let reply = self.sentinels[0].cli(&["sentinel", "get-master-addr-by-name", Self::NAME]);
        reply
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no primary: {reply:?}"))
    }

    /// The data servers (the first started as the primary).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The Sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }
}

/// The replication offset of a primary (`master_repl_offset`) or what a
/// replica has received of it (`slave_repl_offset`).
pub fn replication_offset(port: u16) -> u64 {
    let info = cli(port, &["info", "replication"]);
    info.lines()
        .find_map(|line| {
            line.strip_prefix("slave_repl_offset:")
                .or_else(|| line.strip_prefix("master_repl_offset:"))
        })
        .and_then(|offset| offset.trim().parse().ok())
        .unwrap_or(0)
}
