//! Security on the real RabbitMQ (AMQP_URL, default the local guest broker):
//! the broker password never reaches a log line or an error; `amqps://`
//! verifies the server's certificate against `PRETEXT_AMQP_CA_FILE`; the
//! roles of `ops/rabbitmq/definitions.json` may do their part and the broker
//! refuses them the rest; checkpoints load only as safetensors. The tests add
//! users, vhosts and a TLS listener, and remove them even when they fail;
//! run by hand under `flock -x /tmp/pretext-broker.lock`.

#[path = "fault_support/mod.rs"]
mod faults;
#[path = "trainer_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use pretext_core::manifest::read_manifests;
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_model::tch::Device;
use pretext_model::{
    AdamW, AdamWConfig, CheckpointState, ModelConfig, PretrainModel, list_checkpoints,
    load_checkpoint, save_checkpoint,
};
use pretext_mq::Topology;

use faults::*;

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A tiny dataset: 120 rows of length 512..1500.
fn dataset(dir: &Path) {
    let cfg = SynthConfig {
        sequences: 120,
        min_len: 512,
        max_len: 1500,
        seed: 9,
        rows_per_file: 60,
        row_group_rows: 30,
        ..Default::default()
    };
    generate(&cfg, dir).expect("generate the dataset");
}

/// A broker user with all rights on `vhost`; deleted when dropped.
struct TempUser {
    name: String,
}

impl TempUser {
    fn new(name: &str, password: &str, vhost: &str, perms: [&str; 3]) -> Self {
        rabbitmqctl(&["add_user", name, password]);
        let user = Self { name: name.into() };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            vhost,
            name,
            perms[0],
            perms[1],
            perms[2],
        ]);
        user
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

/// A throwaway vhost; deleted (with its queues) when dropped.
struct TempVhost {
    name: String,
}

impl TempVhost {
    fn new(name: &str) -> Self {
        rabbitmqctl(&["add_vhost", name]);
        Self { name: name.into() }
    }
}

impl Drop for TempVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

/// `pretext ARGS` with stdout and stderr both in `log`, debug-level logs.
fn pretext_debug(args: &[String], log: &Path) -> Command {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretext"));
    cmd.args(args)
        .env("PRETEXT_LOG", "debug")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_password_never_appears_in_logs_or_errors() {
    let _lock = broker_lock().await;
    let n = nanos();
    let password = format!("Pw{n}xQz");
    let user = TempUser::new(
        &format!("pretext-secret-{}-{n}", std::process::id()),
        &password,
        "/",
        [".*", ".*", ".*"],
    );
    let url = format!("amqp://{}:{password}@127.0.0.1:5672/%2f", user.name);
    let dir = tempfile::tempdir().unwrap();
    let (data, run_dir) = (dir.path().join("data"), dir.path().join("run"));
    dataset(&data);
    let topology = Topology::new(support::unique_namespace("secret"));
    let mut cleanup = Cleanup::new(&amqp_url(), &topology);

    // A whole run, producer and trainer, with debug logs.
    let plog = dir.path().join("produce.log");
    let args = produce_args(&url, topology.namespace(), &data, &run_dir, "p1");
    let p = cleanup.keep(pretext_debug(&args, &plog).spawn().unwrap());
    wait_success(&mut cleanup.children[p], &plog);
    let tlog = dir.path().join("train.log");
    let args = train_args(&url, topology.namespace(), &run_dir, 5);
    let t = cleanup.keep(pretext_debug(&args, &tlog).spawn().unwrap());
    wait_success(&mut cleanup.children[t], &tlog);
    let published = read_manifests(&run_dir).unwrap().len() as u64;
    assert!(published > 0);
    assert_exactly_once(&run_dir, published);

    // A wrong password: the run fails, and says so without either password.
    let wrong = format!("Wrong{n}pW");
    let bad_url = format!("amqp://{}:{wrong}@127.0.0.1:5672/%2f", user.name);
    let blog = dir.path().join("bad.log");
    let args = train_args(&bad_url, topology.namespace(), &run_dir, 5);
    let status = pretext_debug(&args, &blog).status().unwrap();
    assert!(!status.success(), "a wrong password must fail the run");

    let mut lines = 0;
    for log in [&plog, &tlog, &blog] {
        let text = read(log);
        lines += text.lines().count();
        for secret in [&password, &wrong] {
            assert!(
                !text.contains(secret.as_str()),
                "{} shows a password:\n{text}",
                log.display()
            );
        }
    }
    let bad = read(&blog);
    assert!(
        bad.contains("***") || bad.to_lowercase().contains("access"),
        "the failure is explained:\n{bad}"
    );
    eprintln!("{lines} log lines checked, no password in any");
    assert!(lines > 20, "debug logs were written");
    drop(cleanup);
}

/// A CA, a server certificate for `localhost` signed by it, and an
/// unrelated CA, made with the openssl command line; world-readable so the
/// broker (another user) can read them.
fn make_certs(dir: &Path) -> PathBuf {
    let tls = dir.join("tls");
    std::fs::create_dir(&tls).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&tls)
            .output()
            .expect("openssl must be installed (ops/setup.sh)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (ca, cn) in [("ca", "pretext-test-ca"), ("other-ca", "someone-else")] {
        let subject = format!("/CN={cn}");
        let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
        ]);
        openssl(&args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&args);
    std::fs::write(
        tls.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    use std::os::unix::fs::PermissionsExt;
    for path in [dir.to_path_buf(), tls.clone()] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for entry in std::fs::read_dir(&tls).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    tls
}

/// A TLS listener of the running broker on loopback; stopped when dropped.
struct TlsListener {
    port: u16,
}

impl TlsListener {
    fn start(tls: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = |name: &str| tls.join(name).display().to_string();
        let expr = format!(
            "rabbit_networking:start_ssl_listener({{\"127.0.0.1\", {port}}}, \
             [{{certfile, \"{}\"}}, {{keyfile, \"{}\"}}, {{cacertfile, \"{}\"}}, \
             {{verify, verify_none}}, {{fail_if_no_peer_cert, false}}], 1).",
            file("server.pem"),
            file("server.key"),
            file("ca.pem")
        );
        let out = rabbitmqctl(&["eval", &expr]);
        let listener = Self { port };
        assert!(out.trim() == "ok", "TLS listener not started: {out}");
        listener
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        let expr = format!(
            "rabbit_networking:stop_tcp_listener({{\"127.0.0.1\", {}}}).",
            self.port
        );
        let _ = Command::new("rabbitmqctl")
            .args(["eval", &expr])
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_verifies_the_broker_certificate_against_the_ca_file() {
    let _lock = broker_lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tls = make_certs(dir.path());
    let listener = TlsListener::start(&tls);
    let url = format!("amqps://guest:guest@localhost:{}/%2f", listener.port);
    let data = dir.path().join("data");
    dataset(&data);
    let topology = Topology::new(support::unique_namespace("tls"));
    let mut cleanup = Cleanup::new(&amqp_url(), &topology);

    // Refused: a CA that did not sign the broker's certificate, and no CA
    // (the platform's roots do not know the test CA). Both at once: each
    // retries until the 10 s connect deadline.
    let refused: Vec<(usize, PathBuf)> = [Some("other-ca.pem"), None]
        .into_iter()
        .enumerate()
        .map(|(i, ca)| {
            let log = dir.path().join(format!("refused-{i}.log"));
            let run_dir = dir.path().join(format!("refused-run-{i}"));
            let args = produce_args(&url, topology.namespace(), &data, &run_dir, "p");
            let mut cmd = pretext(&args, &log);
            cmd.env_remove(pretext_mq::CA_FILE_ENV);
            if let Some(ca) = ca {
                cmd.env(pretext_mq::CA_FILE_ENV, tls.join(ca));
            }
            (cleanup.keep(cmd.spawn().unwrap()), log)
        })
        .collect();
    for (i, log) in &refused {
        let status = cleanup.children[*i].wait().unwrap();
        let text = read(log);
        assert!(
            !status.success(),
            "an unverified broker was accepted:\n{text}"
        );
        assert!(
            text.contains("certificate") || text.contains("Certificate"),
            "the refusal names the certificate:\n{text}"
        );
    }

    // Accepted: the CA that signed it. A whole producer run over TLS.
    let log = dir.path().join("verified.log");
    let run_dir = dir.path().join("run");
    let args = produce_args(&url, topology.namespace(), &data, &run_dir, "p");
    let mut cmd = pretext(&args, &log);
    cmd.env(pretext_mq::CA_FILE_ENV, tls.join("ca.pem"));
    let p = cleanup.keep(cmd.spawn().unwrap());
    wait_success(&mut cleanup.children[p], &log);
    assert!(
        !read_manifests(&run_dir).unwrap().is_empty(),
        "batches published over TLS"
    );
    drop(cleanup);
    drop(listener);
}

/// The permissions of vhost `pretext` in `ops/rabbitmq/definitions.json`:
/// user → [configure, write, read].
fn role_permissions() -> BTreeMap<String, [String; 3]> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/rabbitmq/definitions.json");
    let defs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("definitions.json")).unwrap();
    let mut out = BTreeMap::new();
    for p in defs["permissions"].as_array().expect("permissions") {
        if p["vhost"] == "pretext" {
            let field = |k: &str| p[k].as_str().expect("a regex").to_owned();
            out.insert(
                field("user"),
                [field("configure"), field("write"), field("read")],
            );
        }
    }
    out
}

/// What one AMQP operation came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Refused,
}

/// Runs `op` on a fresh channel: refused if the broker answers 403.
async fn attempt(connection: &Connection, op: &str, queue: &str) -> Outcome {
    let channel = connection.create_channel().await.expect("channel");
    let result = match op {
        "declare" => channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(drop),
        "delete" => channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .map(drop),
        "consume" => channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(drop),
        "publish" => publish_confirmed(&channel, queue, BasicProperties::default()).await,
        _ => unreachable!("unknown operation {op}"),
    };
    match result {
        Ok(()) => Outcome::Allowed,
        Err(err)
            if err.to_string().contains("ACCESS_REFUSED") || err.to_string().contains("403") =>
        {
            Outcome::Refused
        }
        Err(err) => panic!("{op} {queue}: unexpected error {err}"),
    }
}

/// Publishes a probe to `queue` through the default exchange with
/// `properties`, confirmed; a refused publish closes the channel, so a
/// passive declare after it shows the refusal.
async fn publish_confirmed(
    channel: &lapin::Channel,
    queue: &str,
    properties: BasicProperties,
) -> Result<(), lapin::Error> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"probe",
            properties,
        )
        .await?
        .await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_only_its_part() {
    let _lock = broker_lock().await;
    let roles = role_permissions();
    for role in ["producer", "trainer", "scheduler", "finetune"] {
        let [configure, _, _] = roles
            .get(role)
            .unwrap_or_else(|| panic!("no `{role}` permissions"));
        // Services declare their own topology, so a role may configure the
        // names of its namespace, and nothing else.
        let re = regex::Regex::new(configure).expect("a valid pattern");
        for foreign in [
            "pretext.sneaky",
            "other.pretrain",
            "pretext.pretrain-copy",
            "amq.direct",
        ] {
            assert!(
                !re.is_match(foreign),
                "{role} may configure {foreign}: {configure}"
            );
        }
    }
    let n = nanos();
    let vhost = TempVhost::new(&format!("pretext-perm-test-{}-{n}", std::process::id()));
    let _admin = TempUser::new(
        &format!("pretext-perm-root-{n}"),
        "admin-pw",
        &vhost.name,
        [".*", ".*", ".*"],
    );
    let vhost_url =
        |user: &str, pw: &str| format!("amqp://{user}:{pw}@127.0.0.1:5672/{}", vhost.name);
    // The queues of namespace `pretext`, declared by an administrator as
    // the definitions would.
    let admin = connect(&vhost_url(&format!("pretext-perm-root-{n}"), "admin-pw")).await;
    Topology::new("pretext")
        .declare(&*admin)
        .await
        .expect("declare");
    admin.close().await.unwrap();
    let mut users = Vec::new();
    let mut connections = BTreeMap::new();
    for (role, [c, w, r]) in &roles {
        let name = format!("pretext-perm-{role}-{n}");
        users.push(TempUser::new(&name, "role-pw", &vhost.name, [c, w, r]));
        let connection = Connection::connect(
            &vhost_url(&name, "role-pw"),
            ConnectionProperties::default(),
        )
        .await
        .expect("a role logs in");
        connections.insert(role.clone(), connection);
    }

    use Outcome::{Allowed, Refused};
    let checks = [
        ("producer", "publish", "pretext.pretrain", Allowed),
        ("producer", "consume", "pretext.files", Allowed),
        ("producer", "declare", "pretext.sneaky", Refused),
        ("producer", "consume", "pretext.pretrain", Refused),
        ("trainer", "consume", "pretext.pretrain", Allowed),
        ("trainer", "consume", "pretext.files", Refused),
        ("trainer", "declare", "pretext.pretrain-copy", Refused),
        ("finetune", "consume", "pretext.finetune", Allowed),
        ("finetune", "consume", "pretext.pretrain", Refused),
        ("finetune", "declare", "pretext.sneaky", Refused),
        ("scheduler", "declare", "pretext.sneaky", Refused),
        // The scheduler runs retraining, which consumes pretraining batches.
        ("scheduler", "consume", "pretext.pretrain", Allowed),
    ];
    let (total, mut denied) = (checks.len(), 0);
    for (role, op, queue, want) in checks {
        let got = attempt(&connections[role], op, queue).await;
        assert_eq!(got, want, "{role} {op} {queue}");
        denied += usize::from(got == Refused);
    }
    eprintln!(
        "{} operations checked, {denied} refused by the broker",
        total
    );
    for (_, c) in connections {
        let _ = c.close(200, "done".into()).await;
    }
    drop(users);
    drop(vhost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_login_can_neither_end_nor_feed_a_run() {
    let _lock = broker_lock().await;
    let n = nanos();
    let vhost = TempVhost::new(&format!("pretext-trust-test-{}-{n}", std::process::id()));
    let all = [".*", ".*", ".*"];
    let (producer, intruder) = (
        format!("pretext-trust-prod-{n}"),
        format!("pretext-trust-x-{n}"),
    );
    // Both may write everywhere: the trust check, not the permissions, is
    // what is tested.
    let _users = [
        TempUser::new(&producer, "prod-pw", &vhost.name, all),
        TempUser::new(&intruder, "x-pw", &vhost.name, all),
    ];
    let url = |user: &str, pw: &str| format!("amqp://{user}:{pw}@127.0.0.1:5672/{}", vhost.name);
    let (producer_url, intruder_url) = (url(&producer, "prod-pw"), url(&intruder, "x-pw"));

    // The broker refuses a message that claims another login.
    let raw = Connection::connect(&intruder_url, ConnectionProperties::default())
        .await
        .expect("the intruder logs in");
    let channel = raw.create_channel().await.unwrap();
    let spoofed = publish_confirmed(
        &channel,
        "anything",
        BasicProperties::default().with_user_id(producer.as_str().into()),
    )
    .await;
    let err = spoofed.expect_err("a spoofed user_id was accepted");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    let _ = raw.close(200, "done".into()).await;

    // The intruder slips a batch of its own in first; then the producer's
    // run, 6 batches of one task; then the intruder says that task published
    // 2 batches (a trainer that believed it would stop after 2).
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let topology = Topology::new("pretext");
    let forged = connect(&intruder_url).await;
    topology.declare(&*forged).await.expect("declare");
    let extra = support::batches(pretext_core::task::Task::Masked, "forged", 1);
    support::publish_task_batches(&*forged, &topology, "all", &extra).await;
    let real = connect(&producer_url).await;
    let data = support::batches(pretext_core::task::Task::Masked, "all", 6);
    support::publish_task_batches(&*real, &topology, "all", &data).await;
    support::manifest(run_dir, "all", &data);
    support::control(
        &*real,
        &topology,
        support::plan(pretext_core::task::Task::Masked, 1),
    )
    .await;
    support::control(&*real, &topology, support::task_done("all", &data)).await;
    real.close().await.unwrap();
    support::control(&*forged, &topology, support::task_done("all", &data[..2])).await;
    forged.close().await.unwrap();

    let log = run_dir.join("train.log");
    let mut args = train_args(&producer_url, topology.namespace(), run_dir, 4);
    args.extend(["--trusted-publishers".into(), producer.clone()]);
    let mut child = pretext(&args, &log).spawn().unwrap();
    wait_success(&mut child, &log);
    let text = read(&log);
    assert!(
        text.contains("ignoring a control message from an untrusted publisher"),
        "{text}"
    );
    assert!(text.contains("not one of the trusted publishers"), "{text}");
    assert_exactly_once(run_dir, 6);
    drop(vhost);
}

/// A pickle that runs `touch MARKER` when unpickled (protocol 2).
fn malicious_pickle(marker: &Path) -> Vec<u8> {
    let mut pickle = b"\x80\x02cposix\nsystem\n(S'touch ".to_vec();
    pickle.extend_from_slice(marker.display().to_string().as_bytes());
    pickle.extend_from_slice(b"'\ntR.");
    pickle
}

#[test]
fn checkpoints_load_only_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig {
        width: 8,
        depth: 1,
        ..Default::default()
    };
    let mut model = PretrainModel::new(&config, Device::Cpu).unwrap();
    let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let state = CheckpointState::new(3, config, serde_json::json!({}));
    let good = save_checkpoint(dir.path(), model.var_store(), &opt, &state).unwrap();
    load_checkpoint::<serde_json::Value>(&good, model.var_store_mut(), Some(&mut opt))
        .expect("a real checkpoint loads");

    let marker = dir.path().join("pwned");
    let pickle = malicious_pickle(&marker);
    // A torch.save file is a zip holding data.pkl.
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&pickle);
    for (i, (file, payload)) in [
        ("model.safetensors", &pickle),
        ("model.safetensors", &zip),
        ("optimizer.safetensors", &pickle),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = dir.path().join(format!("bad-{i}"));
        let bad = bad.join("step-000003");
        std::fs::create_dir_all(&bad).unwrap();
        for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            std::fs::copy(good.join(f), bad.join(f)).unwrap();
        }
        std::fs::write(bad.join(file), payload).unwrap();
        let err = load_checkpoint::<serde_json::Value>(&bad, model.var_store_mut(), Some(&mut opt))
            .expect_err("a pickle posing as safetensors must not load");
        eprintln!("refused {file} #{i}: {err}");
        assert!(!marker.exists(), "the pickle ran");
    }

    // Weights in any other format are not a checkpoint at all.
    let other = dir.path().join("other").join("step-000003");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("model.pt"), &pickle).unwrap();
    std::fs::write(other.join("model.bin"), &pickle).unwrap();
    for f in ["optimizer.safetensors", "state.json"] {
        std::fs::copy(good.join(f), other.join(f)).unwrap();
    }
    assert!(
        list_checkpoints(other.parent().unwrap())
            .unwrap()
            .is_empty()
    );
    assert!(load_checkpoint::<serde_json::Value>(&other, model.var_store_mut(), None).is_err());
    assert!(!marker.exists(), "the pickle ran");
}
