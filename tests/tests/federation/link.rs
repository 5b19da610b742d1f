//! An uplink that can be cut: a TCP forwarder between a site broker's bridge and the hub.
//!
//! Cutting it closes every connection through it and refuses new ones (accepted, then closed at
//! once) until it is restored, as a dropped WAN link whose router resets connections would. Both
//! brokers keep running; the site's bridge reconnects by itself once the link is back.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A running forwarder from `127.0.0.1:{port}` to the target port.
pub struct Link {
    port: u16,
    up: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Link {
    /// Listens on a free local port and forwards every connection to `127.0.0.1:{target}`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the link can listen");
        let port = listener.local_addr().expect("a local address").port();
        let up = Arc::new(AtomicBool::new(true));
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let acceptor = {
            let (up, pipes) = (up.clone(), pipes.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let pipe = tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await
                        else {
                            return;
                        };
                        let mut inbound = inbound;
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                    let mut pipes = pipes.lock().unwrap();
                    pipes.retain(|p| !p.is_finished());
                    pipes.push(pipe);
                }
            })
        };
        Self {
            port,
            up,
            pipes,
            acceptor,
        }
    }

    /// The port the site's bridge connects to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.acceptor.abort();
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}
