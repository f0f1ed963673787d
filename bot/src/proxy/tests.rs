//! The forwarding path in process, against upstreams that show what arrives: an echo of the
//! request's headers and a WebSocket echo. The front end here is the same hyper server
//! setup and [`forward`] the front door runs, pointed at one upstream.

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// Answers every request with its headers, one `name: value` line each, and its body.
async fn header_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let mut text = String::new();
                    for (name, value) in req.headers() {
                        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                    }
                    let body = req.into_body().collect().await?.to_bytes();
                    text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A WebSocket server that sends back every message it gets.
async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        socket.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    addr
}

/// A front end passing everything to `upstream` through [`forward`].
async fn front(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = upstream_client();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let client = client.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let host = request_host(&req).unwrap_or_default();
                        let peer_ip = HeaderValue::try_from(peer.ip().to_string()).unwrap();
                        let authority = Authority::try_from(upstream.to_string()).unwrap();
                        let response = forward(&client, &peer_ip, &host, &authority, req).await;
                        Ok::<_, Infallible>(response.expect("the upstream answers"))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn forwarded_headers_are_added_and_hop_by_hop_ones_dropped() {
    let front = front(header_echo().await).await;
    let mut stream = TcpStream::connect(front).await.unwrap();
    stream
        .write_all(
            b"POST /x?y=1 HTTP/1.1\r\nHost: shop-main.localhost:8081\r\n\
              X-Forwarded-For: 203.0.113.9\r\nConnection: close, x-private\r\n\
              X-Private: secret\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{answer}"
    );
    assert!(
        answer.contains("x-forwarded-host: shop-main.localhost:8081\n"),
        "{answer}"
    );
    assert!(answer.contains("x-forwarded-proto: http\n"), "{answer}");
    assert!(
        answer.contains("host: shop-main.localhost:8081\n"),
        "{answer}"
    );
    // The streamed (chunked) body arrives whole; connection-scoped headers do not.
    assert!(answer.contains("body: hello world\n"), "{answer}");
    assert!(!answer.contains("x-private"), "{answer}");
    assert!(!answer.contains("keep-alive"), "{answer}");
}

#[tokio::test]
async fn http2_clients_are_served() {
    let front = front(header_echo().await).await;
    let stream = TcpStream::connect(front).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri("http://shop-main.localhost/")
        .body(Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("host: shop-main.localhost\n"), "{body}");
    assert!(body.contains("body: over h2\n"), "{body}");
}

#[tokio::test]
async fn websockets_are_joined_both_ways() {
    let front = front(websocket_echo().await).await;
    let stream = TcpStream::connect(front).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async("ws://shop-main.localhost/socket", stream)
            .await
            .expect("the upgrade goes through the front door");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["ping", "a second message"] {
        socket.send(Message::Text(text.into())).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::Text(text.into()));
    }
    socket.close(None).await.unwrap();
}
