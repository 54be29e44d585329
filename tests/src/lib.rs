//! Test support: a Runnel broker started in-process on a free loopback port.

use runnel_broker::server::{self, RunningServer};
use runnel_broker::{Broker, BrokerConfig};

/// A broker serving on 127.0.0.1 with its data in a temporary directory.
pub struct TestBroker {
    /// `host:port` to bootstrap from.
    pub bootstrap: String,
    dir: tempfile::TempDir,
    port: u16,
    extra: Vec<(String, String)>,
    running: Option<RunningServer>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TestBroker {
    /// Starts a broker with extra `key=value` settings.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut b = Self {
            bootstrap: format!("127.0.0.1:{port}"),
            dir,
            port,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: None,
        };
        b.boot().await;
        b
    }

    async fn boot(&mut self) {
        let mut pairs = vec![
            (
                "listeners".to_string(),
                format!("PLAINTEXT://127.0.0.1:{}", self.port),
            ),
            (
                "log.dirs".to_string(),
                self.dir.path().display().to_string(),
            ),
        ];
        pairs.extend(self.extra.clone());
        let config = BrokerConfig::from_pairs(&pairs).expect("valid test config");
        let broker = Broker::open(config).expect("broker opens");
        self.running = Some(server::start(broker).await.expect("broker listens"));
    }

    /// Stops the broker cleanly.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// The broker's data directory (`log.dirs`).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The broker inside (None while stopped).
    pub fn broker(&self) -> Option<&std::sync::Arc<Broker>> {
        self.running.as_ref().map(|r| r.broker())
    }

    /// Creates a topic through the client's Admin (panics on failure).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        runnel_api::Admin::connect(&self.bootstrap)
            .await
            .expect("admin connects")
            .create_topics(&[runnel_api::NewTopic::new(name, partitions)])
            .await
            .expect("topic created");
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }
}
