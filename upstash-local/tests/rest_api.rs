//! Drives upstash-local over real HTTP against a real `redis-server`, one test
//! per behaviour documented by Upstash. Unless noted otherwise, the quoted
//! statements are from Upstash's REST API page,
//! <https://upstash.com/docs/redis/features/restapi>.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};
use synckairos_testkit::RedisServer;
use synckairos_upstash_local::{run, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "test-token-2553feg6a2d9842h2a0gcdb5f8efe9934";
const UNAUTHORIZED: &str = "WRONGPASS invalid or missing auth token";

/// A running endpoint in front of its own redis-server; stopped on drop.
struct Endpoint {
    base: String,
    http: reqwest::Client,
    redis: RedisServer,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Endpoint {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let redis = RedisServer::start();
        let mut config = Config::new(redis.url(), TOKEN);
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));
        // TLS is rustls; when another crate of the same build enables reqwest's
        // rustls without a crypto provider, the client needs the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let endpoint = Self {
            base,
            http,
            redis,
            stop: Some(stop),
            task: Some(task),
        };
        // `run` binds nothing itself; wait until it has checked Redis and serves.
        for _ in 0..200 {
            if let Ok(r) = endpoint.http.get(endpoint.url("/health")).send().await {
                if r.status() == StatusCode::OK {
                    return endpoint;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("upstash-local did not become healthy");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn authed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    /// POSTs a JSON body with the right token; returns status and JSON body.
    async fn post(&self, path: &str, body: Json) -> (StatusCode, Json) {
        read(self.authed(Method::POST, path).json(&body)).await
    }

    async fn post_b64(&self, path: &str, body: Json) -> (StatusCode, Json) {
        read(
            self.authed(Method::POST, path)
                .header("Upstash-Encoding", "base64")
                .json(&body),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Json) {
        read(self.authed(Method::GET, path)).await
    }

    /// A direct Redis connection, bypassing the endpoint.
    fn redis(&self) -> redis::Connection {
        self.redis.client().get_connection().unwrap()
    }

    /// Stops the server and waits for `run` to return.
    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).ok();
        let result = self.task.take().unwrap().await.unwrap();
        result.expect("run returns Ok after a graceful shutdown");
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn read(request: reqwest::RequestBuilder) -> (StatusCode, Json) {
    let response = request.send().await.expect("request reaches upstash-local");
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "body: {text}"
    );
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

fn error_of(body: &Json) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

// "Alternatively, you can send the whole command in the request body as a
// single JSON array ... `["SET", "foo", "bar", "EX", 100]`" and "200 OK: When
// request is accepted and successfully executed", with "a single `result`
// field" holding the Redis response.
#[tokio::test]
async fn single_command_in_json_body() {
    let ep = Endpoint::start().await;
    assert_eq!(
        ep.post("/", json!(["SET", "foo", "bar", "EX", 100])).await,
        (StatusCode::OK, json!({"result": "OK"}))
    );
    assert_eq!(
        ep.post("/", json!(["GET", "foo"])).await,
        (StatusCode::OK, json!({"result": "bar"}))
    );
    // The number 100 arrived as the decimal text "100".
    let (status, ttl) = ep.post("/", json!(["TTL", "foo"])).await;
    assert_eq!(status, StatusCode::OK);
    let ttl = ttl["result"].as_i64().unwrap();
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    // "an integer: { "result": 137 }"
    assert_eq!(
        ep.post("/", json!(["INCRBY", "n", 137])).await,
        (StatusCode::OK, json!({"result": 137}))
    );
    // PUT is one of the allowed methods and means the same as POST.
    assert_eq!(
        read(ep.authed(Method::PUT, "/").json(&json!(["GET", "foo"]))).await,
        (StatusCode::OK, json!({"result": "bar"}))
    );
    ep.shutdown().await;
}

// "Give the command name and parameters in the same order as Redis protocol by
// separating them with a `/`": `SET foo bar -> REST_URL/set/foo/bar`,
// `GET foo -> REST_URL/get/foo`. And "To post a JSON or a binary value, you can
// use an HTTP POST request and set value as the request body ... If there are
// additional parameters ... include them as query parameters":
// `/set/foo?EX=100` is `REST_URL/set/foo/$VALUE/EX/100`.
#[tokio::test]
async fn path_form_commands() {
    let ep = Endpoint::start().await;
    assert_eq!(
        ep.get("/set/foo/bar").await,
        (StatusCode::OK, json!({"result": "OK"}))
    );
    assert_eq!(
        ep.get("/get/foo").await,
        (StatusCode::OK, json!({"result": "bar"}))
    );
    // Segments are percent-decoded.
    assert_eq!(
        ep.get("/set/a%2Fb/c%20d").await,
        (StatusCode::OK, json!({"result": "OK"}))
    );
    assert_eq!(
        ep.post("/", json!(["GET", "a/b"])).await,
        (StatusCode::OK, json!({"result": "c d"}))
    );
    // `MGET foo1 foo2 foo3 -> REST_URL/mget/foo1/foo2/foo3`
    assert_eq!(
        ep.get("/mget/foo/missing/a%2Fb").await,
        (StatusCode::OK, json!({"result": ["bar", null, "c d"]}))
    );
    // The body is the value; query parameters follow it.
    let (status, body) = read(
        ep.authed(Method::POST, "/set/json?EX=100")
            .body(r#"{"a": [1, 2]}"#),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"result": "OK"})));
    assert_eq!(
        ep.get("/get/json").await,
        (StatusCode::OK, json!({"result": r#"{"a": [1, 2]}"#}))
    );
    let (_, ttl) = ep.get("/ttl/json").await;
    assert!((1..=100).contains(&ttl["result"].as_i64().unwrap()));
    ep.shutdown().await;
}

// "400 Bad Request: When there's a syntax error, an invalid/unsupported command
// is sent or command execution fails" and "If command is rejected or fails,
// response JSON will have a single `error` field with a string value explaining
// the failure: {"error":"ERR wrong number of arguments for 'get' command"}".
#[tokio::test]
async fn redis_errors_are_400_with_the_redis_text() {
    let ep = Endpoint::start().await;
    assert_eq!(
        ep.post("/", json!(["GET"])).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "ERR wrong number of arguments for 'get' command"})
        )
    );
    ep.post("/", json!(["LPUSH", "list", "x"])).await;
    let (status, body) = ep.post("/", json!(["GET", "list"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).starts_with("WRONGTYPE "), "{body}");
    // In the path form every path names a command: an unknown one is Redis's
    // own "unknown command" error.
    let (status, body) = ep.get("/nosuchcommand/x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).starts_with("ERR unknown command"), "{body}");
    ep.shutdown().await;
}

// "401 Unauthorized: When authentication fails; auth token is missing or
// invalid." and "You need to add a header to your API requests as
// `Authorization: Bearer $TOKEN` or set the token as a url parameter
// `_token=$TOKEN`." The body text is from Upstash's troubleshooting page
// (https://upstash.com/docs/redis/troubleshooting/http_unauthorized):
// "WRONGPASS invalid or missing auth token".
#[tokio::test]
async fn unauthorized_without_the_right_token() {
    let ep = Endpoint::start().await;
    let body = json!(["SET", "k", "v"]);
    let expected = (StatusCode::UNAUTHORIZED, json!({"error": UNAUTHORIZED}));

    // Missing.
    assert_eq!(read(ep.http.post(ep.url("/")).json(&body)).await, expected);
    // Wrong bearer token.
    assert_eq!(
        read(ep.http.post(ep.url("/")).bearer_auth("nope").json(&body)).await,
        expected
    );
    // Not a bearer token at all.
    assert_eq!(
        read(
            ep.http
                .post(ep.url("/"))
                .header("Authorization", TOKEN)
                .json(&body)
        )
        .await,
        expected
    );
    // Wrong `_token`.
    assert_eq!(
        read(ep.http.get(ep.url("/set/k/v?_token=nope"))).await,
        expected
    );
    // Every path needs the token, the batch endpoints too.
    assert_eq!(
        read(ep.http.post(ep.url("/pipeline")).json(&json!([body]))).await,
        expected
    );
    assert_eq!(
        read(ep.http.post(ep.url("/multi-exec")).json(&json!([body]))).await,
        expected
    );
    // None of those ran.
    let exists: i64 = redis::cmd("EXISTS")
        .arg("k")
        .query(&mut ep.redis())
        .unwrap();
    assert_eq!(exists, 0);

    // The right `_token` query parameter works without a header.
    assert_eq!(
        read(ep.http.get(ep.url(&format!("/set/k/v?_token={TOKEN}")))).await,
        (StatusCode::OK, json!({"result": "OK"}))
    );
    assert_eq!(
        read(
            ep.http
                .post(ep.url(&format!("/?_token={TOKEN}")))
                .json(&json!(["GET", "k"]))
        )
        .await,
        (StatusCode::OK, json!({"result": "v"}))
    );
    ep.shutdown().await;
}

// Pipelining: "Pipelined commands should be send as a two dimensional JSON
// array"; "Each item in the response array corresponds to the result of a
// command in the same order"; the documented example and its response
// `[{"result":"OK"},{"result":"OK"},{"error":"ERR value is not an int or out
// of range"},{"result":2}]` (the error text is the Redis version's own).
#[tokio::test]
async fn pipeline_with_mixed_success_and_error() {
    let ep = Endpoint::start().await;
    let (status, body) = ep
        .post(
            "/pipeline",
            json!([
                ["SET", "key1", "valuex"],
                ["SETEX", "key2", 13, "valuez"],
                ["INCR", "key1"],
                ["ZADD", "myset", 11, "item1", 22, "item2"]
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0], json!({"result": "OK"}));
    assert_eq!(items[1], json!({"result": "OK"}));
    assert!(
        error_of(&items[2]).starts_with("ERR value is not an integer"),
        "{body}"
    );
    assert_eq!(items[3], json!({"result": 2}));
    // Later commands saw earlier ones: order is kept.
    assert_eq!(
        ep.post(
            "/pipeline",
            json!([["SET", "p", "1"], ["INCR", "p"], ["GET", "p"]])
        )
        .await,
        (
            StatusCode::OK,
            json!([{"result": "OK"}, {"result": 2}, {"result": "2"}])
        )
    );
    ep.shutdown().await;
}

// Transactions: "Upstash REST API supports transactions to execute multiple
// commands atomically ... API endpoint for transaction is `/multi-exec`", with
// the same response shape as the pipeline and the same documented example
// ("a command may still fail even if it is a supported and valid command. In
// that case, all commands will be executed").
#[tokio::test]
async fn multi_exec_runs_a_real_transaction() {
    let ep = Endpoint::start().await;
    let (status, body) = ep
        .post(
            "/multi-exec",
            json!([
                ["SET", "key1", "valuex"],
                ["SETEX", "key2", 13, "valuez"],
                ["INCR", "key1"],
                ["ZADD", "myset", 11, "item1", 22, "item2"]
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body.as_array().unwrap();
    assert_eq!(items[0], json!({"result": "OK"}));
    assert_eq!(items[1], json!({"result": "OK"}));
    assert!(error_of(&items[2]).starts_with("ERR value is not an integer"));
    assert_eq!(items[3], json!({"result": 2}));

    // It really was MULTI/EXEC on the Redis side.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut ep.redis())
        .unwrap();
    assert!(stats.contains("cmdstat_multi:calls=1,"), "{stats}");
    assert!(stats.contains("cmdstat_exec:calls=1,"), "{stats}");
    ep.shutdown().await;
}

// "If transaction is discarded as a whole, a single error is returned in json
// as follows: { "error": "ERR ..." }" ("There is a syntax error on the
// transaction request" / "At least one of the commands is unsupported").
#[tokio::test]
async fn multi_exec_discarded_as_a_whole() {
    let ep = Endpoint::start().await;
    // Redis rejects GET without a key while queueing: nothing runs.
    let (status, body) = ep
        .post("/multi-exec", json!([["SET", "x", "1"], ["GET"]]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "ERR wrong number of arguments for 'get' command"})
    );
    // An unsupported command discards it before anything is sent.
    let (status, body) = ep
        .post("/multi-exec", json!([["SET", "x", "1"], ["BLPOP", "l", 0]]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).starts_with("ERR "), "{body}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg("x")
        .query(&mut ep.redis())
        .unwrap();
    assert_eq!(exists, 0, "a discarded transaction applied nothing");
    ep.shutdown().await;
}

// "Execution of the pipeline is _not atomic_ ... commands sent by other clients
// can interleave with the pipeline. Use transactions API instead if you need
// atomicity." Many transactions of three INCRs race many single INCRs on the
// same key over several multiplexed connections, each shared by many requests;
// every transaction's three results must still be consecutive.
#[tokio::test]
async fn multi_exec_is_not_interleaved_by_other_clients() {
    let ep = Endpoint::start_with(|c| c.pool_size = 8).await;
    let transactions = (0..40).map(|_| {
        ep.post(
            "/multi-exec",
            json!([["INCR", "c"], ["INCR", "c"], ["INCR", "c"]]),
        )
    });
    let singles = (0..40).map(|_| ep.post("/", json!(["INCR", "c"])));
    let (tx_results, single_results) = tokio::join!(
        futures::future::join_all(transactions),
        futures::future::join_all(singles)
    );
    for (status, body) in &single_results {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    for (status, body) in &tx_results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let n: Vec<i64> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["result"].as_i64().unwrap())
            .collect();
        assert_eq!(n.len(), 3);
        assert_eq!(
            (n[1] - n[0], n[2] - n[1]),
            (1, 1),
            "interleaved transaction {n:?}"
        );
    }
    assert_eq!(
        ep.post("/", json!(["GET", "c"])).await.1,
        json!({"result": "160"})
    );
    ep.shutdown().await;
}

// "If you prefer the raw response in base64 format, you can achieve this by
// setting the `Upstash-Encoding` header to `base64`. In this case, all strings
// in the response will be base64 encoded, except for the "OK" response."
// Examples: `SET foo bar` → `{"result":"OK"}`, `GET foo` → `{"result":"YmFy"}`.
#[tokio::test]
async fn base64_encoding_of_strings_only() {
    let ep = Endpoint::start().await;
    let b64 = |path: &str| {
        read(
            ep.authed(Method::GET, path)
                .header("Upstash-Encoding", "base64"),
        )
    };
    assert_eq!(b64("/SET/foo/bar").await.1, json!({"result": "OK"}));
    assert_eq!(b64("/GET/foo").await.1, json!({"result": "YmFy"}));
    // Integers and nulls stay as they are.
    assert_eq!(b64("/INCR/n").await.1, json!({"result": 1}));
    assert_eq!(b64("/GET/missing").await.1, json!({"result": null}));
    // Other status replies are strings, so they are encoded.
    assert_eq!(b64("/PING").await.1, json!({"result": "UE9ORw=="}));
    // Strings inside arrays, at any depth.
    assert_eq!(
        ep.post_b64("/", json!(["MGET", "foo", "missing"])).await.1,
        json!({"result": ["YmFy", null]})
    );
    ep.post("/", json!(["XADD", "s", "1-1", "f", "v"])).await;
    assert_eq!(
        ep.post_b64("/", json!(["XRANGE", "s", "-", "+"])).await.1,
        json!({"result": [["MS0x", ["Zg==", "dg=="]]]})
    );
    // Error texts are not encoded.
    assert_eq!(
        ep.post_b64("/", json!(["GET"])).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "ERR wrong number of arguments for 'get' command"})
        )
    );
    // The same per pipeline entry.
    assert_eq!(
        ep.post_b64(
            "/pipeline",
            json!([["SET", "a", "b"], ["GET", "a"], ["INCR", "n"], ["GET"]])
        )
        .await,
        (
            StatusCode::OK,
            json!([
                {"result": "OK"},
                {"result": "Yg=="},
                {"result": 2},
                {"error": "ERR wrong number of arguments for 'get' command"}
            ])
        )
    );
    assert_eq!(
        ep.post_b64("/multi-exec", json!([["SET", "a", "c"], ["GET", "a"]]))
            .await,
        (
            StatusCode::OK,
            json!([{"result": "OK"}, {"result": "Yw=="}])
        )
    );
    ep.shutdown().await;
}

// "If the response contains an invalid utf-8 character, it will be replaced
// with a � (Replacement character U+FFFD) ... If you prefer the raw response in
// base64 format ..." A binary value posted as the body ("To post a JSON or a
// binary value ... set value as the request body") reads back exactly in
// base64, and lossily without it.
#[tokio::test]
async fn binary_values_lossy_as_text_exact_as_base64() {
    let ep = Endpoint::start().await;
    let (status, _) = read(
        ep.authed(Method::POST, "/set/bin")
            .body(vec![0xff_u8, 0x00, b'a']),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let raw: Vec<u8> = redis::cmd("GET").arg("bin").query(&mut ep.redis()).unwrap();
    assert_eq!(raw, [0xff, 0x00, b'a']);
    assert_eq!(
        ep.get("/get/bin").await.1,
        json!({"result": "\u{fffd}\u{0}a"})
    );
    assert_eq!(
        ep.post_b64("/", json!(["GET", "bin"])).await.1,
        json!({"result": "/wBh"})
    );
    ep.shutdown().await;
}

// Response: the result "can be either; a `null` value ... an array value:
// { "result": ["value1", null, "value2"] }". Arrays nest as Redis nests them
// (XRANGE entries, tables returned by EVAL), with nil as null at any depth.
#[tokio::test]
async fn nil_and_nested_arrays() {
    let ep = Endpoint::start().await;
    assert_eq!(
        ep.post("/", json!(["GET", "nothing"])).await,
        (StatusCode::OK, json!({"result": null}))
    );
    ep.post("/", json!(["SET", "value1", "a"])).await;
    ep.post("/", json!(["SET", "value2", "b"])).await;
    assert_eq!(
        ep.post("/", json!(["MGET", "value1", "nothing", "value2"]))
            .await
            .1,
        json!({"result": ["a", null, "b"]})
    );
    ep.post("/", json!(["XADD", "s", "1-1", "a", "1", "b", "2"]))
        .await;
    ep.post("/", json!(["XADD", "s", "2-1", "c", "3"])).await;
    assert_eq!(
        ep.post("/", json!(["XRANGE", "s", "-", "+"])).await.1,
        json!({"result": [["1-1", ["a", "1", "b", "2"]], ["2-1", ["c", "3"]]]})
    );
    assert_eq!(
        ep.post(
            "/",
            json!(["EVAL", "return {1, 'two', {3, 'four', {'five'}}, false}", 0])
        )
        .await
        .1,
        json!({"result": [1, "two", [3, "four", ["five"]], null]})
    );
    ep.shutdown().await;
}

// The documented examples pass numbers as arguments (`["SETEX", "key2", 13,
// "valuez"]`); the edge worker passes numkeys and numeric ARGV the same way to
// EVAL and EVALSHA.
#[tokio::test]
async fn eval_and_evalsha_with_number_arguments() {
    let ep = Endpoint::start().await;
    let script = "return {KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[1]) + tonumber(ARGV[3])}";
    assert_eq!(
        ep.post("/", json!(["EVAL", script, 1, "k", 40, 1.5, 2]))
            .await,
        (StatusCode::OK, json!({"result": ["k", "40", "1.5", 42]}))
    );
    let (status, sha) = ep.post("/", json!(["SCRIPT", "LOAD", script])).await;
    assert_eq!(status, StatusCode::OK);
    let sha = sha["result"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 40);
    assert_eq!(
        ep.post("/", json!(["EVALSHA", sha, 1, "k", 40, -7, 2]))
            .await,
        (StatusCode::OK, json!({"result": ["k", "40", "-7", 42]}))
    );
    ep.shutdown().await;
}

// The edge worker falls back from EVALSHA to EVAL on a NOSCRIPT error, so the
// error text must pass through: "If command is rejected or fails, response
// JSON will have a single `error` field with a string value explaining the
// failure". Checked for a single command, a pipeline entry, with base64, and
// the fallback sequence itself.
#[tokio::test]
async fn noscript_error_passes_through() {
    let ep = Endpoint::start().await;
    let script = "return 'hi ' .. ARGV[1]";
    let sha = {
        let (_, body) = ep.post("/", json!(["SCRIPT", "LOAD", script])).await;
        body["result"].as_str().unwrap().to_string()
    };
    ep.post("/", json!(["SCRIPT", "FLUSH"])).await;

    let (status, body) = ep.post("/", json!(["EVALSHA", sha, 0, "you"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).starts_with("NOSCRIPT"), "{body}");

    let (status, body) = ep
        .post("/pipeline", json!([["EVALSHA", sha, 0, "you"], ["PING"]]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(error_of(&body[0]).starts_with("NOSCRIPT"), "{body}");
    assert_eq!(body[1], json!({"result": "PONG"}));

    let (status, body) = ep.post_b64("/", json!(["EVALSHA", sha, 0, "you"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).starts_with("NOSCRIPT"), "{body}");

    // The fallback: EVAL loads the script, after which EVALSHA works.
    assert_eq!(
        ep.post("/", json!(["EVAL", script, 0, "you"])).await,
        (StatusCode::OK, json!({"result": "hi you"}))
    );
    assert_eq!(
        ep.post("/", json!(["EVALSHA", sha, 0, "again"])).await,
        (StatusCode::OK, json!({"result": "hi again"}))
    );
    ep.shutdown().await;
}

// "400 Bad Request: When there's a syntax error": a body that is not JSON, or
// not a command array, is a 400 with an `error` field.
#[tokio::test]
async fn malformed_requests_are_400() {
    let ep = Endpoint::start().await;
    let raw = |path: &str, body: &'static str| {
        read(
            ep.authed(Method::POST, path)
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
    };
    for (path, body) in [
        ("/", r#"["SET", "k", "#),
        ("/", r#"{"command": "GET"}"#),
        ("/", r#"["SET", "k", {"nested": 1}]"#),
        ("/", r#"["SET", "k", true]"#),
        ("/", "[]"),
        ("/", ""),
        ("/pipeline", r#"[["GET", "a"], "GET"]"#),
        ("/pipeline", r#"["GET", "a"]"#),
        ("/pipeline", "[]"),
        ("/multi-exec", "not json"),
    ] {
        let (status, reply) = raw(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {reply}");
        assert!(
            error_of(&reply).starts_with("ERR "),
            "{path} {body}: {reply}"
        );
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg("k")
        .query(&mut ep.redis())
        .unwrap();
    assert_eq!(exists, 0);
    ep.shutdown().await;
}

// Upstash's troubleshooting page
// (https://upstash.com/docs/redis/troubleshooting/max_request_size_exceeded):
// a command over the max request size fails with "ERR max request size
// exceeded"; the HTTP Codes list has no 413, and a failing command is a 400.
// The limit is configurable (default 10 MiB); here 1 KiB.
#[tokio::test]
async fn oversized_body_is_rejected() {
    let ep = Endpoint::start_with(|c| c.max_request_bytes = 1024).await;
    let expected = (
        StatusCode::BAD_REQUEST,
        json!({"error": "ERR max request size exceeded"}),
    );
    let big = "x".repeat(2000);
    assert_eq!(ep.post("/", json!(["SET", "big", big])).await, expected);
    assert_eq!(
        ep.post("/pipeline", json!([["SET", "big", big]])).await,
        expected
    );
    assert_eq!(
        read(ep.authed(Method::POST, "/set/big").body(big.clone())).await,
        expected
    );
    // Just under the limit is fine.
    let fits = "y".repeat(900);
    assert_eq!(
        ep.post("/", json!(["SET", "fits", fits])).await,
        (StatusCode::OK, json!({"result": "OK"}))
    );

    // A chunked body (no Content-Length) is cut off at the limit as well.
    let addr = ep.base.trim_start_matches("http://").to_string();
    let chunk = format!("[\"SET\",\"big\",\"{big}\"]");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains(r#"{"error":"ERR max request size exceeded"}"#),
        "{response}"
    );

    let exists: i64 = redis::cmd("EXISTS")
        .arg("big")
        .query(&mut ep.redis())
        .unwrap();
    assert_eq!(exists, 0);
    ep.shutdown().await;
}

// Paths: `/monitor` and `/subscribe/..` are Upstash's Server-Sent-Events
// endpoints ("API endpoint is `/monitor`", "API endpoints are `/subscribe` and
// `/publish`"), not implemented here: 404. `/publish/chat/hello` is the plain
// path form of PUBLISH and works. "405 Method Not Allowed: ... Only `HEAD`,
// `GET`, `POST` and `PUT` methods are allowed." `/health` answers without a
// token.
#[tokio::test]
async fn unknown_endpoints_methods_and_health() {
    let ep = Endpoint::start().await;
    for path in ["/monitor", "/subscribe/chat"] {
        let (status, body) = read(ep.authed(Method::POST, path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(error_of(&body).contains("not implement"), "{body}");
    }
    assert_eq!(
        read(ep.authed(Method::POST, "/publish/chat/hello")).await,
        (StatusCode::OK, json!({"result": 0}))
    );
    for method in [Method::DELETE, Method::PATCH] {
        let response = ep.authed(method, "/get/foo").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers()["allow"].to_str().unwrap(),
            "HEAD, GET, POST, PUT"
        );
    }
    assert_eq!(
        read(ep.http.get(ep.url("/health"))).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    ep.shutdown().await;
}

// The "REST - Redis API Compatibility" table: "Blocking commands (BLPOP -
// BRPOP - BRPOPLPUSH) are not supported", Pub/Sub "Only PUBLISH and PUBSUB
// are supported", Connection "Only PING and ECHO are supported",
// Transactions "WATCH/UNWATCH/DISCARD are not supported", Streams "except
// blocking versions of XREAD and XREADGROUP". "400 Bad Request: When ... an
// invalid/unsupported command is sent".
#[tokio::test]
async fn unsupported_commands_are_refused() {
    let ep = Endpoint::start().await;
    for command in [
        json!(["BLPOP", "l", 0]),
        json!(["BZPOPMIN", "z", 0]),
        json!(["SUBSCRIBE", "chat"]),
        json!(["SELECT", 1]),
        json!(["CLIENT", "SETNAME", "x"]),
        json!(["MULTI"]),
        json!(["WATCH", "k"]),
        json!(["XREAD", "BLOCK", 0, "STREAMS", "s", "$"]),
        json!(["MONITOR"]),
    ] {
        let (status, body) = ep.post("/", command.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{command}");
        assert!(
            error_of(&body).contains("not supported"),
            "{command}: {body}"
        );
    }
    // The supported neighbours work.
    assert_eq!(
        ep.post("/", json!(["ECHO", "hi"])).await.1,
        json!({"result": "hi"})
    );
    assert_eq!(
        ep.post("/", json!(["XREAD", "COUNT", 1, "STREAMS", "s", "0"]))
            .await
            .1,
        json!({"result": null})
    );
    // In a pipeline only the refused entry fails.
    let (status, body) = ep
        .post(
            "/pipeline",
            json!([["SET", "k", "v"], ["BLPOP", "l", 0], ["GET", "k"]]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0], json!({"result": "OK"}));
    assert!(error_of(&body[1]).contains("not supported"));
    assert_eq!(body[2], json!({"result": "v"}));
    ep.shutdown().await;
}

// "If you prefer the binary response in RESP2 format, you can achieve this by
// setting the `Upstash-Response-Format` header to `resp2`. In this case, the
// response content type is set to `application/octet-stream`" (`GET foo` →
// `$3\r\nbar\r\n`). "Any format other than `json` and `resp2` is not allowed
// and will result in a HTTP 400 Bad Request" and so is base64 with resp2.
#[tokio::test]
async fn resp2_response_format() {
    let ep = Endpoint::start().await;
    ep.get("/set/foo/bar").await;
    let resp2 = |path: &str| {
        ep.authed(Method::GET, path)
            .header("Upstash-Response-Format", "resp2")
    };
    let response = resp2("/GET/foo").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE].to_str().unwrap(),
        "application/octet-stream"
    );
    assert_eq!(&response.bytes().await.unwrap()[..], b"$3\r\nbar\r\n");
    let response = resp2("/SET/foo/baz").send().await.unwrap();
    assert_eq!(&response.bytes().await.unwrap()[..], b"+OK\r\n");

    let (status, _) = read(
        ep.authed(Method::GET, "/GET/foo")
            .header("Upstash-Response-Format", "xml"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = read(resp2("/GET/foo").header("Upstash-Encoding", "base64")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // "This option is not applicable to `/multi-exec`": JSON there.
    assert_eq!(
        read(
            ep.authed(Method::POST, "/multi-exec")
                .header("Upstash-Response-Format", "resp2")
                .json(&json!([["GET", "foo"]]))
        )
        .await,
        (StatusCode::OK, json!([{"result": "baz"}]))
    );
    ep.shutdown().await;
}

// Many more concurrent requests than connections share them (pipelined), and
// every one gets its own reply.
#[tokio::test]
async fn more_requests_than_connections() {
    let ep = Endpoint::start_with(|c| c.pool_size = 2).await;
    let requests = (0..50).map(|i| ep.post("/", json!(["SET", format!("k{i}"), i])));
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!((status, body), (StatusCode::OK, json!({"result": "OK"})));
    }
    let size: i64 = redis::cmd("DBSIZE").query(&mut ep.redis()).unwrap();
    assert_eq!(size, 50);
    ep.shutdown().await;
}

// Fail fast: a Redis that cannot be reached is an error from `run` at start,
// not a server that fails every request.
#[tokio::test]
async fn run_fails_fast_without_redis() {
    let port = synckairos_testkit::free_port();
    let mut config = Config::new(format!("redis://127.0.0.1:{port}/"), TOKEN);
    config.redis_timeout_ms = 2000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        run(listener, config, std::future::pending()),
    )
    .await
    .expect("run gives up quickly")
    .expect_err("no Redis, no server");
    let message = format!("{err:#}");
    assert!(message.contains("cannot connect to Redis"), "{message}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = run(
        listener,
        Config::new("redis://127.0.0.1:1/", ""),
        std::future::pending(),
    )
    .await
    .expect_err("an empty token is refused");
    assert!(
        format!("{err:#}").contains("UPSTASH_LOCAL_TOKEN"),
        "{err:#}"
    );
}
