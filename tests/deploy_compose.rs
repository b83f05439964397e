//! The deployment files, checked without a Docker engine: `docker-compose
//! config` accepts docker-compose.yml, and in its normalised form every
//! pretext service runs a real `pretext` subcommand whose flags and
//! environment variables `pretext` itself accepts (clap parses the command,
//! each `PRETEXT_*` variable turned into its flag, then `--help`), the
//! trainers can be scaled, the broker's health gates the services, volumes and
//! health checks are there, Prometheus scrapes every service, and
//! ops/rabbitmq/definitions.json matches the topology the code declares with
//! least-privilege users and no passwords, and `ops/make-secrets.sh` makes
//! each service's password readable by the uid its image runs as, and only
//! by it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use pretext_mq::credentials::{PASSWORD_ENV, PASSWORD_FILE_ENV, USER_ENV};
use pretext_mq::{QueueKind, QueueRole, Topology};
use regex::Regex;
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Variables read outside clap: by `main` (log filter), the rendezvous
/// (torchrun's names), Gloo's interface choice, and the credential loader.
const OTHER_VARS: [&str; 7] = [
    "PRETEXT_LOG",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "GLOO_SOCKET_IFNAME",
];

/// `docker-compose config`: the file as Compose reads it (anchors merged,
/// defaults filled), parsed.
static COMPOSE: LazyLock<Value> = LazyLock::new(|| {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(root())
        .output()
        .expect("docker-compose is missing: ops/setup.sh installs it");
    assert!(
        out.status.success(),
        "docker-compose config rejects docker-compose.yml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::from_slice(&out.stdout).expect("docker-compose config prints YAML")
});

fn services() -> &'static serde_yaml::Mapping {
    COMPOSE["services"].as_mapping().expect("services")
}

fn service(name: &str) -> &'static Value {
    COMPOSE["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service `{name}` in docker-compose.yml"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn env_of(svc: &Value) -> BTreeMap<String, String> {
    svc["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => panic!("odd value of {k:?}: {other:?}"),
                    };
                    (k.as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The services built from ops/Dockerfile: they run `pretext`.
fn pretext_services() -> Vec<(String, &'static Value)> {
    let out: Vec<_> = services()
        .iter()
        .filter(|(_, s)| s["build"]["dockerfile"].as_str() == Some("ops/Dockerfile"))
        .map(|(n, s)| (n.as_str().unwrap().to_owned(), s))
        .collect();
    assert!(out.len() >= 4, "expected producer, trainers and finetune");
    out
}

/// The `pretext` arguments a service runs: its command, or for the lean
/// producer (entrypoint `pretext-produce`, built from the same `produce`
/// arguments, see services/producer/src/cli) `produce` followed by its command.
fn pretext_command(name: &str, svc: &Value) -> Vec<String> {
    let command = strings(&svc["command"]);
    match strings(&svc["entrypoint"]).as_slice() {
        [] => command,
        [e] if e == "pretext-produce" => {
            let mut c = vec!["produce".to_owned()];
            c.extend(command);
            c
        }
        other => panic!("{name}: unexpected entrypoint {other:?}"),
    }
}

fn pretext(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .env_clear()
        .output()
        .expect("run pretext")
}

/// What `pretext [sub] --help` says: each `[env: NAME=]` with the long flag
/// it belongs to and whether that flag takes a value.
fn env_flags(sub: Option<&str>) -> BTreeMap<String, (String, bool)> {
    static ENV: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[env: ([A-Z0-9_]+)=").unwrap());
    static FLAG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\s+(?:-\w, )?--([a-z0-9-]+)( <)?").unwrap());
    let mut args: Vec<String> = sub.into_iter().map(str::to_owned).collect();
    args.push("--help".into());
    let out = pretext(&args);
    assert!(out.status.success(), "pretext {args:?} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut map = BTreeMap::new();
    let mut current: Option<(String, bool)> = None;
    for line in text.lines() {
        if let Some(c) = FLAG.captures(line) {
            current = Some((c[1].to_owned(), c.get(2).is_some()));
        }
        for c in ENV.captures_iter(line) {
            let flag = current
                .clone()
                .expect("an env annotation belongs to a flag");
            map.insert(c[1].to_owned(), flag);
        }
    }
    map
}

fn subcommands() -> BTreeSet<String> {
    let out = pretext(&["--help".into()]);
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn docker_compose_config_accepts_the_file() {
    let status = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .status()
        .expect("docker-compose is missing: ops/setup.sh installs it");
    assert!(status.success(), "docker-compose config -q failed");
}

#[test]
fn the_flag_check_itself_catches_unknown_flags_and_bad_values() {
    // Without this, the check below could pass on anything.
    for bad in [
        vec!["train", "--no-such-flag", "--help"],
        vec!["train", "--task", "nonsense", "--help"],
        vec!["produce", "--metrics-addr", "not-an-address", "--help"],
        vec!["no-such-subcommand", "--help"],
    ] {
        let args: Vec<String> = bad.iter().map(|s| (*s).to_owned()).collect();
        assert!(!pretext(&args).status.success(), "{bad:?} was accepted");
    }
    let good: Vec<String> = ["train", "--task", "next", "--help"]
        .map(String::from)
        .to_vec();
    assert!(pretext(&good).status.success());
}

#[test]
fn every_service_runs_a_real_subcommand_with_flags_and_variables_it_accepts() {
    let subs = subcommands();
    assert!(
        subs.contains("train") && subs.contains("produce"),
        "{subs:?}"
    );
    let global = env_flags(None);
    let credentials = [USER_ENV, PASSWORD_ENV, PASSWORD_FILE_ENV];
    for (name, svc) in pretext_services() {
        let command = pretext_command(&name, svc);
        let sub = command
            .first()
            .unwrap_or_else(|| panic!("{name}: no command"));
        assert!(subs.contains(sub), "{name}: `pretext {sub}` does not exist");
        let flags = env_flags(Some(sub));
        // The command, each variable as its flag, then --help: clap parses
        // and validates everything before it prints the help.
        let mut args = command.clone();
        for (var, value) in env_of(svc) {
            if credentials.contains(&var.as_str()) || OTHER_VARS.contains(&var.as_str()) {
                continue;
            }
            let (flag, takes_value) = flags
                .get(&var)
                .or_else(|| global.get(&var))
                .unwrap_or_else(|| panic!("{name}: `pretext {sub}` reads no variable {var}"));
            if *takes_value {
                args.push(format!("--{flag}={value}"));
            } else {
                assert!(
                    ["true", "false", "1", "0"].contains(&value.as_str()),
                    "{name}: {var}={value} is not a boolean"
                );
            }
        }
        args.push("--help".into());
        let out = pretext(&args);
        assert!(
            out.status.success(),
            "{name}: pretext rejects {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn variables_outside_clap_are_read_by_the_code() {
    // Each name in OTHER_VARS appears as a string literal in the sources.
    let mut sources = String::new();
    for dir in ["crates", "services"] {
        collect_rs(&root().join(dir), &mut sources);
    }
    for var in OTHER_VARS {
        assert!(
            sources.contains(&format!("\"{var}\"")),
            "no source reads {var}"
        );
    }
}

fn collect_rs(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn credentials_come_from_secret_files_only() {
    let secrets = COMPOSE["secrets"].as_mapping().expect("top-level secrets");
    for (name, svc) in services() {
        let env = env_of(svc);
        assert!(
            !env.contains_key(PASSWORD_ENV),
            "{name:?}: a password in the compose file"
        );
        if let Some(broker) = env.get("PRETEXT_BROKER") {
            assert!(
                !broker.contains('@'),
                "{name:?}: credentials in the broker URL"
            );
            assert!(env.contains_key(USER_ENV), "{name:?}: no broker user");
        }
        if let Some(file) = env.get(PASSWORD_FILE_ENV) {
            let secret = file
                .strip_prefix("/run/secrets/")
                .unwrap_or_else(|| panic!("{name:?}: password file outside /run/secrets"));
            assert!(secrets.contains_key(secret), "{name:?}: no secret {secret}");
            let mounted: Vec<String> = svc["secrets"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().or_else(|| s["source"].as_str()))
                .map(str::to_owned)
                .collect();
            assert!(
                mounted.iter().any(|s| s == secret),
                "{name:?}: secret {secret} not mounted"
            );
        }
    }
    for dockerfile in ["ops/Dockerfile", "ops/Dockerfile.cuda"] {
        let text = std::fs::read_to_string(root().join(dockerfile)).unwrap();
        assert!(
            !text.contains("AMQP_PASSWORD"),
            "{dockerfile} sets a password"
        );
        assert!(!text.contains("secrets"), "{dockerfile} touches secrets/");
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "secrets"),
        ".dockerignore must keep secrets/ out of the build context"
    );
}

#[test]
fn trainers_scale_and_meet_at_one_rendezvous() {
    let trainer = service("trainer");
    for key in ["container_name", "ports", "hostname"] {
        assert!(
            trainer.get(key).is_none(),
            "trainer has `{key}`, which stops `--scale trainer=N`"
        );
    }
    let env = env_of(trainer);
    assert!(!env.contains_key("RANK"), "ranks must come from the store");
    // Elastic: no fixed world size, so `--scale` changes the group.
    assert!(
        !env.contains_key("WORLD_SIZE"),
        "a fixed world cannot scale"
    );
    assert!(env["PRETEXT_NNODES"].starts_with("1:"), "{env:?}");
    let (master, port) = env["PRETEXT_RDZV_ENDPOINT"]
        .split_once(':')
        .expect("HOST:PORT");
    assert!(port.parse::<u16>().is_ok());
    // The endpoint's host names exactly one container: a service with that
    // hostname and the trainer's own command and settings (it hosts the store).
    let master = &master.to_owned();
    let leader = service(master);
    assert_eq!(leader["hostname"].as_str(), Some(master.as_str()));
    assert!(
        leader
            .get("deploy")
            .is_none_or(|d| d["replicas"].as_u64().is_none_or(|r| r == 1))
    );
    assert_eq!(leader["command"], trainer["command"]);
    assert_eq!(env_of(leader), env);
    assert_eq!(strings(&trainer["command"])[0], "train");
}

#[test]
fn services_wait_for_the_broker_have_health_checks_and_named_volumes() {
    let volumes = COMPOSE["volumes"].as_mapping().expect("named volumes");
    for v in ["data", "runs", "registry", "rabbitmq-data"] {
        assert!(volumes.contains_key(v), "no named volume {v}");
    }
    let rabbit = service("rabbitmq");
    assert!(rabbit["healthcheck"]["test"].as_sequence().is_some());
    for mount in strings(&rabbit["volumes"]) {
        if let Some((src, _)) = mount.split_once(':').filter(|(s, _)| s.starts_with('/')) {
            assert!(Path::new(src).exists(), "rabbitmq mounts missing {src}");
        }
    }
    for (name, svc) in services() {
        let name = name.as_str().unwrap();
        let job = strings(&svc["profiles"]).iter().any(|p| p == "jobs");
        let test = strings(&svc["healthcheck"]["test"]);
        if !job {
            assert!(
                !test.is_empty() && test[0] != "NONE",
                "{name}: a long-running service needs a health check"
            );
        }
        let env = env_of(svc);
        if env.contains_key("PRETEXT_BROKER") {
            assert_eq!(
                svc["depends_on"]["rabbitmq"]["condition"].as_str(),
                Some("service_healthy"),
                "{name}: must wait for the broker's health"
            );
        }
        if let Some(addr) = env.get("PRETEXT_METRICS_ADDR") {
            let port = addr.rsplit(':').next().unwrap();
            assert!(
                test.iter().any(|t| t.contains(&format!(":{port}/healthz"))),
                "{name}: the health check must ask /healthz on port {port}: {test:?}"
            );
        }
        if name != "rabbitmq" && name != "prometheus" {
            let mounts = strings(&svc["volumes"]);
            assert!(
                mounts.iter().any(|m| m.starts_with("runs:/runs")),
                "{name}: runs must be on the named volume"
            );
        }
    }
}

#[test]
fn prometheus_scrapes_every_service_that_serves_metrics() {
    let prom = service("prometheus");
    assert!(strings(&prom["profiles"]).contains(&"prometheus".to_owned()));
    let text = std::fs::read_to_string(root().join("ops/prometheus.yml")).unwrap();
    let config: Value = serde_yaml::from_str(&text).unwrap();
    let mut targets = BTreeSet::new();
    for job in config["scrape_configs"].as_sequence().unwrap() {
        for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            let port = sd["port"].as_u64().unwrap();
            for n in strings(&sd["names"]) {
                targets.insert(format!("{n}:{port}"));
            }
        }
        for st in job["static_configs"].as_sequence().into_iter().flatten() {
            targets.extend(strings(&st["targets"]));
        }
    }
    for (name, svc) in services() {
        if let Some(addr) = env_of(svc).get("PRETEXT_METRICS_ADDR") {
            let port = addr.rsplit(':').next().unwrap();
            let want = format!("{}:{port}", name.as_str().unwrap());
            assert!(
                targets.contains(&want),
                "Prometheus does not scrape {want}: {targets:?}"
            );
        }
    }
}

fn definitions() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("ops/rabbitmq/definitions.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn rabbitmq_definitions_hold_the_declared_topology_and_no_passwords() {
    let defs = definitions();
    assert_eq!(defs["vhosts"], serde_json::json!([{"name": "pretext"}]));
    let users: BTreeSet<&str> = defs["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            assert_eq!(u["password_hash"], "", "{u}: a password in the definitions");
            u["name"].as_str().unwrap()
        })
        .collect();
    for role in ["producer", "trainer", "scheduler", "finetune"] {
        assert!(users.contains(role), "no user {role}");
    }
    // The queues exactly as the services declare them for namespace `pretext`
    // (a mismatch would make every service's declaration fail).
    let topology = Topology::new("pretext");
    let queues = defs["queues"].as_array().unwrap();
    assert_eq!(queues.len(), QueueRole::ALL.len());
    for role in QueueRole::ALL {
        let spec = topology.spec(role);
        let q = queues
            .iter()
            .find(|q| q["name"] == spec.name.as_str())
            .unwrap_or_else(|| panic!("no queue {}", spec.name));
        assert_eq!(q["vhost"], "pretext");
        assert_eq!(q["durable"], true);
        let mut want = serde_json::Map::new();
        let kind = match spec.kind {
            QueueKind::Quorum => "quorum",
            QueueKind::Stream => "stream",
        };
        want.insert("x-queue-type".into(), kind.into());
        if let Some(max) = spec.max_length_bytes {
            want.insert("x-max-length-bytes".into(), max.into());
            if spec.kind == QueueKind::Quorum {
                want.insert("x-overflow".into(), "reject-publish".into());
            }
        }
        if let Some(limit) = spec.delivery_limit {
            want.insert("x-delivery-limit".into(), limit.into());
        }
        if let Some(dl) = &spec.dead_letter {
            want.insert("x-dead-letter-exchange".into(), dl.exchange.clone().into());
            if spec.max_length_bytes.is_some() {
                want.insert("x-dead-letter-strategy".into(), "at-least-once".into());
            }
        }
        assert_eq!(
            q["arguments"],
            serde_json::Value::Object(want),
            "{}",
            spec.name
        );
    }
    let dl = topology.dead_letter();
    assert_eq!(defs["exchanges"][0]["name"], dl.exchange.as_str());
    assert_eq!(defs["exchanges"][0]["type"], "fanout");
    assert_eq!(defs["bindings"][0]["source"], dl.exchange.as_str());
    assert_eq!(defs["bindings"][0]["destination"], dl.queue.as_str());
}

#[test]
fn each_role_may_touch_only_its_own_queues() {
    let defs = definitions();
    let perm = |user: &str, what: &str| -> Regex {
        let p = defs["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user"] == user && p["vhost"] == "pretext")
            .unwrap_or_else(|| panic!("no permissions for {user}"));
        Regex::new(p[what].as_str().unwrap()).unwrap()
    };
    // (user, queues it reads, queues it must not read)
    let cases = [
        (
            "producer",
            vec!["pretext.files", "pretext.control"],
            vec!["pretext.pretrain", "pretext.finetune", "pretext.dead"],
        ),
        (
            "trainer",
            // The dead-letter stream: which batches never come (reading a
            // stream takes nothing from it).
            vec!["pretext.pretrain", "pretext.control", "pretext.dead"],
            vec!["pretext.files", "pretext.finetune"],
        ),
        (
            "finetune",
            vec!["pretext.finetune", "pretext.control"],
            vec!["pretext.files", "pretext.pretrain", "pretext.dead"],
        ),
        (
            "scheduler",
            vec![
                "pretext.files",
                "pretext.pretrain",
                "pretext.control",
                "pretext.dead",
            ],
            vec![],
        ),
    ];
    for (user, reads, not_reads) in cases {
        let (configure, write, read) = (
            perm(user, "configure"),
            perm(user, "write"),
            perm(user, "read"),
        );
        for q in reads {
            assert!(read.is_match(q), "{user} cannot read {q}");
        }
        for q in not_reads {
            assert!(!read.is_match(q), "{user} may read {q}");
        }
        // Publishing goes through the default exchange; binding the dead
        // letter queue to `pretext.dlx` needs write on the queue, and
        // declaring a queue whose dead-letter exchange is `pretext.dlx`
        // needs write on that exchange (RabbitMQ refuses the declaration
        // otherwise: found by the compose test's scheduler run).
        assert!(
            write.is_match("amq.default")
                && write.is_match("pretext.dead")
                && write.is_match("pretext.dlx")
        );
        assert!(!write.is_match("pretext.pretrain") && !write.is_match("amq.topic"));
        // Declaring is limited to the namespace's own names.
        assert!(configure.is_match("pretext.pretrain") && configure.is_match("pretext.dlx"));
        for other in [
            "other.pretrain",
            "pretext.pretrain2",
            "xpretext.files",
            "amq.default",
        ] {
            assert!(!configure.is_match(other), "{user} may configure {other}");
            assert!(!read.is_match(other), "{user} may read {other}");
        }
    }
    // The scheduler's retrain N runs in namespace `pretext-runN`.
    let (configure, read) = (perm("scheduler", "configure"), perm("scheduler", "read"));
    assert!(
        configure.is_match("pretext-run12.pretrain") && read.is_match("pretext-run12.pretrain")
    );
    let write = perm("scheduler", "write");
    assert!(write.is_match("pretext-run12.dead") && write.is_match("pretext-run12.dlx"));
    for other in [
        "pretext-runx.pretrain",
        "pretext-run1.sneaky",
        "pretext-run1-copy.files",
    ] {
        assert!(
            !configure.is_match(other),
            "the scheduler may configure {other}"
        );
    }
    let trainer = perm("trainer", "configure");
    assert!(
        !trainer.is_match("pretext-run1.pretrain"),
        "only the scheduler has run namespaces"
    );
}

/// `KEY=value` lines of an env file (comments and blanks skipped).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_example_env_files_hold_only_variables_pretext_reads_with_valid_values() {
    let global = env_flags(None);
    for (file, sub) in [
        ("producer", "produce"),
        ("trainer", "train"),
        ("finetune", "finetune"),
    ] {
        let path = root().join(format!("ops/examples/{file}.env"));
        let env = env_file(&path);
        assert!(
            !env.contains_key(PASSWORD_ENV),
            "{file}.env holds a password"
        );
        let flags = env_flags(Some(sub));
        let mut args = vec![sub.to_owned()];
        for (var, value) in env {
            if [USER_ENV, PASSWORD_FILE_ENV].contains(&var.as_str())
                || OTHER_VARS.contains(&var.as_str())
            {
                continue;
            }
            let (flag, takes_value) = flags
                .get(&var)
                .or_else(|| global.get(&var))
                .unwrap_or_else(|| panic!("{file}.env: `pretext {sub}` reads no variable {var}"));
            if *takes_value {
                args.push(format!("--{flag}={value}"));
            }
        }
        args.push("--help".into());
        let out = pretext(&args);
        assert!(
            out.status.success(),
            "{file}.env: pretext rejects {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn make_secrets_gives_each_password_to_the_service_user_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dockerfile = std::fs::read_to_string(root().join("ops/Dockerfile")).unwrap();
    let uid: u32 = Regex::new(r"--uid (\d+)")
        .unwrap()
        .captures(&dockerfile)
        .expect("ops/Dockerfile creates its user with --uid")[1]
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let run = || {
        Command::new("bash")
            .arg(root().join("ops/make-secrets.sh"))
            .env("PRETEXT_SECRETS_DIR", &secrets)
            .env_remove("PRETEXT_SERVICE_UID")
            .output()
            .unwrap()
    };
    let me = Command::new("id").arg("-u").output().unwrap();
    let me: u32 = String::from_utf8_lossy(&me.stdout).trim().parse().unwrap();
    let out = run();
    if me != 0 {
        // Without root the files cannot be handed over: a clear refusal.
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run as root"), "{err}");
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Vec<Vec<u8>> = ["admin", "producer", "trainer", "scheduler", "finetune"]
        .iter()
        .map(|role| {
            let f = secrets.join(format!("amqp_{role}_password"));
            let m = std::fs::metadata(&f).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o400, "{role}");
            let owner = if *role == "admin" { me } else { uid };
            assert_eq!(m.uid(), owner, "{role}: owned by uid {}", m.uid());
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(bytes.len(), 48, "{role}: 24 random bytes in hex");
            bytes
        })
        .collect();
    assert_eq!(
        first.iter().collect::<BTreeSet<_>>().len(),
        5,
        "five different passwords"
    );
    // A second run keeps the passwords.
    assert!(run().status.success());
    for (role, bytes) in ["admin", "producer", "trainer", "scheduler", "finetune"]
        .iter()
        .zip(&first)
    {
        let again = std::fs::read(secrets.join(format!("amqp_{role}_password"))).unwrap();
        assert_eq!(&again, bytes, "{role}");
    }
}
