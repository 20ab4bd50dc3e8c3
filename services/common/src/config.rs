//! Configuration of a stage: the pipeline YAML file, then environment variables, then
//! command-line flags, merged in that order (later wins).
//!
//! The file (`PIPELINE_CONFIG`, the operator's ConfigMap) holds what every stage shares:
//! pipeline name, Kafka settings, topic overrides and one section per stage. Env vars
//! and flags come from [`RuntimeArgs`], which every service flattens into its clap CLI,
//! so `--bootstrap-servers` beats `KAFKA_BOOTSTRAP_SERVERS` beats `kafka.bootstrap_servers`.
//!
//! Every error is a [`ConfigError`] that names the offending key in one line; services
//! print it and exit non-zero (see [`ConfigError::exit`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kafka::KafkaSettings;
use crate::topics::{resolve_topics, Topic, TopicOverride, TopicSpec};

/// Env vars with this prefix become Kafka client properties: `KAFKA_PROP_SASL_PASSWORD`
/// sets `sasl.password`. Meant for secrets mounted from a Kubernetes Secret.
pub const KAFKA_PROPERTY_ENV_PREFIX: &str = "KAFKA_PROP_";

/// A configuration problem, naming the key that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    /// The key: a file path like `stages.producer.customers`, or an env var name.
    pub key: String,
    /// What is wrong with it, in one line.
    pub message: String,
}

impl ConfigError {
    /// A new error about `key`.
    pub fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        let message = message.to_string().replace('\n', " ");
        ConfigError { key: key.into(), message }
    }

    /// Prints the error as one line on stderr and exits with status 2.
    pub fn exit(&self) -> ! {
        eprintln!("{self}");
        std::process::exit(2)
    }
}

/// Env vars and flags shared by every stage (clap, with env fallback).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RuntimeArgs {
    /// Path of the pipeline YAML file.
    #[arg(long = "config", env = "PIPELINE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Pipeline name P; topics are named `P.<logical>`.
    #[arg(long, env = "PIPELINE_NAME", global = true)]
    pub pipeline_name: Option<String>,
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    pub bootstrap_servers: Option<String>,
    /// Consumer group of the stage (default `P.<stage>`).
    #[arg(long, env = "KAFKA_GROUP_ID", global = true)]
    pub group_id: Option<String>,
    /// Instance id; the transactional id is `P.<stage>.<POD_NAME>`.
    #[arg(long, env = "POD_NAME", global = true)]
    pub pod_name: Option<String>,
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_PORT", global = true)]
    pub http_port: Option<String>,
    /// Log format: json or pretty.
    #[arg(long, env = "LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default in Kubernetes).
    Json,
    /// Human-readable, coloured when on a terminal.
    Pretty,
}

/// The `kafka` section of the pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Broker list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// librdkafka properties passed through as is (security.protocol, sasl.*, ssl.*).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// The pipeline YAML file, as written by the operator into the stages' ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Pipeline name P.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kafka connection.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// Overrides of the default topic settings, by logical name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, TopicOverride>,
    /// One section per stage, by stage name; each stage parses its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub stages: BTreeMap<String, serde_yaml::Value>,
    /// The text this was parsed from, so a stage's section can be parsed again with
    /// line numbers in its errors.
    #[serde(skip)]
    #[schemars(skip)]
    pub source: Option<String>,
}

impl PipelineFile {
    /// Reads and parses the file; errors name the key (or the file when it is not YAML).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("PIPELINE_CONFIG", format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses YAML text; errors name the key path.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut file: PipelineFile = parse_yaml(text)?;
        file.source = Some(text.to_owned());
        Ok(file)
    }
}

/// The names of the stages, as used in group ids, stats and the file's `stages` map.
pub const STAGES: [&str; 4] = ["producer", "feature-processor", "intervention", "dashboard"];

/// A stage's fully resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Pipeline name P.
    pub pipeline: String,
    /// This stage's name.
    pub stage: String,
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Consumer group id.
    pub group_id: String,
    /// Instance id (POD_NAME).
    pub instance: String,
    /// HTTP port for health and metrics.
    pub http_port: u16,
    /// Log format.
    pub log_format: LogFormat,
    /// Every topic of the pipeline, resolved.
    pub topics: Vec<TopicSpec>,
    file: PipelineFile,
}

impl Settings {
    /// Loads the settings of `stage` from the file, the process environment and `args`.
    pub fn load(stage: &str, args: &RuntimeArgs) -> Result<Self, ConfigError> {
        Self::load_with_env(stage, args, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given (for `KAFKA_PROP_*`).
    pub fn load_with_env(
        stage: &str,
        args: &RuntimeArgs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => PipelineFile::load(path)?,
            None => PipelineFile::default(),
        };
        Self::resolve(stage, file, args, env)
    }

    /// Merges a parsed file with env vars and flags.
    pub fn resolve(
        stage: &str,
        file: PipelineFile,
        args: &RuntimeArgs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        if !STAGES.contains(&stage) {
            return Err(ConfigError::new("stage", format!("unknown stage `{stage}`")));
        }
        if let Some(unknown) = file.stages.keys().find(|k| !STAGES.contains(&k.as_str())) {
            return Err(ConfigError::new(
                format!("stages.{unknown}"),
                format!("unknown stage (expected one of {})", STAGES.join(", ")),
            ));
        }

        let pipeline = args.pipeline_name.clone().or_else(|| file.name.clone()).ok_or_else(|| {
            ConfigError::new(
                "PIPELINE_NAME",
                "missing: set PIPELINE_NAME, --pipeline-name or `name` in the pipeline file",
            )
        })?;
        validate_pipeline_name(&pipeline)?;

        let bootstrap = args
            .bootstrap_servers
            .clone()
            .or_else(|| file.kafka.bootstrap_servers.clone())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "KAFKA_BOOTSTRAP_SERVERS",
                    "missing: set KAFKA_BOOTSTRAP_SERVERS, --bootstrap-servers or kafka.bootstrap_servers in the pipeline file",
                )
            })?;
        let mut properties = file.kafka.properties.clone();
        for (key, value) in env {
            if let Some(name) = key.strip_prefix(KAFKA_PROPERTY_ENV_PREFIX) {
                properties.insert(name.to_ascii_lowercase().replace('_', "."), value);
            }
        }
        if properties.contains_key("bootstrap.servers") {
            return Err(ConfigError::new(
                "kafka.properties.bootstrap.servers",
                "set the broker list with kafka.bootstrap_servers or KAFKA_BOOTSTRAP_SERVERS instead",
            ));
        }

        let http_port = match &args.http_port {
            None => 8080,
            // 0 picks a free port (the bound address is logged).
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| ConfigError::new("HTTP_PORT", format!("`{p}` is not a port number (0-65535)")))?,
        };
        let log_format = match args.log_format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => return Err(ConfigError::new("LOG_FORMAT", format!("`{other}` is not one of json, pretty"))),
        };

        let mut overrides = BTreeMap::new();
        for (name, over) in &file.topics {
            let topic = Topic::from_logical(name).ok_or_else(|| {
                let known: Vec<&str> = Topic::ALL.iter().map(|t| t.logical()).collect();
                ConfigError::new(
                    format!("topics.{name}"),
                    format!("unknown topic (expected one of {})", known.join(", ")),
                )
            })?;
            overrides.insert(topic, over.clone());
        }
        let topics = resolve_topics(&pipeline, &overrides);
        validate_topics(&topics)?;

        let instance = args
            .pod_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{stage}-{}", std::process::id()));
        let group_id = args.group_id.clone().unwrap_or_else(|| format!("{pipeline}.{stage}"));

        Ok(Settings {
            kafka: KafkaSettings { bootstrap_servers: bootstrap, properties },
            stage: stage.to_owned(),
            pipeline,
            group_id,
            instance,
            http_port,
            log_format,
            topics,
            file,
        })
    }

    /// The resolved spec of `topic`.
    pub fn topic(&self, topic: Topic) -> &TopicSpec {
        self.topics.iter().find(|t| t.topic == topic).expect("every topic is resolved")
    }

    /// The Kafka name of `topic`.
    pub fn topic_name(&self, topic: Topic) -> &str {
        &self.topic(topic).name
    }

    /// Parses this stage's section of the file (`stages.<stage>`), or the default when
    /// absent. Errors name the full key path.
    /// When the file's text is known, the section is parsed from it, so errors also
    /// carry the line and column (`... at line 12 column 9`).
    pub fn stage_settings<T: DeserializeOwned + Default>(&self) -> Result<T, ConfigError> {
        match self.file.stages.get(&self.stage) {
            None | Some(serde_yaml::Value::Null) => Ok(T::default()),
            Some(_) if self.file.source.is_some() => {
                let text = self.file.source.as_deref().unwrap_or_default();
                let seed = section::FileSeed::<T>::new(&self.stage);
                let mut track = serde_path_to_error::Track::new();
                let de = serde_path_to_error::Deserializer::new(serde_yaml::Deserializer::from_str(text), &mut track);
                match serde::de::DeserializeSeed::deserialize(seed, de) {
                    Ok(value) => Ok(value.unwrap_or_default()),
                    Err(e) => {
                        let key = track.path().to_string();
                        Err(ConfigError::new(key, strip_path_prefix(&e.to_string())))
                    }
                }
            }
            Some(value) => serde_path_to_error::deserialize(value.clone()).map_err(|e| {
                let path = e.path().to_string();
                let key = if path == "." {
                    format!("stages.{}", self.stage)
                } else {
                    format!("stages.{}.{path}", self.stage)
                };
                ConfigError::new(key, e.into_inner())
            }),
        }
    }

    /// The transactional id of this instance: `P.<stage>.<POD_NAME>`.
    pub fn transactional_id(&self) -> String {
        format!("{}.{}.{}", self.pipeline, self.stage, self.instance)
    }
}

/// Reads one stage's section straight out of the whole file's text, skipping the rest,
/// so the YAML deserializer's errors keep their positions in the file.
mod section {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// Finds `stages.<stage>` in the file and deserializes it as `T`.
    pub struct FileSeed<'a, T> {
        stage: &'a str,
        at_stages: bool,
        _t: PhantomData<T>,
    }

    impl<'a, T> FileSeed<'a, T> {
        pub fn new(stage: &'a str) -> Self {
            FileSeed { stage, at_stages: false, _t: PhantomData }
        }
    }

    impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for FileSeed<'_, T> {
        type Value = Option<T>;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(self)
        }
    }

    impl<'de, T: DeserializeOwned> Visitor<'de> for FileSeed<'_, T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                if !self.at_stages && key == "stages" {
                    found =
                        map.next_value_seed(FileSeed::<T> { stage: self.stage, at_stages: true, _t: PhantomData })?;
                } else if self.at_stages && key == self.stage {
                    found = map.next_value::<Option<T>>()?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
}

/// serde_yaml starts its messages with the path of the node (`a.b[0]: ...`); the key
/// is already said once, by [`ConfigError`].
fn strip_path_prefix(message: &str) -> String {
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() => rest.to_owned(),
        _ => message.to_owned(),
    }
}

fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { "PIPELINE_CONFIG".to_owned() } else { path };
        // serde_yaml already prefixes its message with the path; say the key only once.
        let message = e.into_inner().to_string();
        let message = message.strip_prefix(&format!("{key}: ")).unwrap_or(&message).to_owned();
        ConfigError::new(key, message)
    })
}

/// A pipeline name must be usable in topic names and Kubernetes object names: lowercase
/// letters, digits and `-`, starting and ending alphanumeric, at most 40 characters.
pub fn validate_pipeline_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "PIPELINE_NAME",
            format!(
                "`{name}` must be 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

fn validate_topics(topics: &[TopicSpec]) -> Result<(), ConfigError> {
    let transactions = topics.iter().find(|t| t.topic == Topic::Transactions).map_or(0, |t| t.partitions);
    for spec in topics {
        let key = format!("topics.{}.partitions", spec.topic);
        if spec.partitions < 1 {
            return Err(ConfigError::new(key, format!("must be at least 1, got {}", spec.partitions)));
        }
        if spec.replicas < 1 {
            return Err(ConfigError::new(
                format!("topics.{}.replicas", spec.topic),
                format!("must be at least 1, got {}", spec.replicas),
            ));
        }
        if spec.topic.defaults().co_partitioned && spec.partitions != transactions {
            return Err(ConfigError::new(
                key,
                format!(
                    "must equal topics.transactions.partitions ({transactions}): state is restored partition by partition, got {}",
                    spec.partitions
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn args() -> RuntimeArgs {
        RuntimeArgs {
            pipeline_name: Some("demo".into()),
            bootstrap_servers: Some("b:9092".into()),
            ..Default::default()
        }
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct ProducerSection {
        customers: u32,
        seed: u64,
    }

    #[test]
    fn flags_and_env_override_the_file() {
        let file = PipelineFile::parse(
            "name: from-file\nkafka:\n  bootstrap_servers: file:9092\n  properties:\n    security.protocol: SSL\n",
        )
        .unwrap();
        let s = Settings::resolve("producer", file.clone(), &RuntimeArgs::default(), []).unwrap();
        assert_eq!((s.pipeline.as_str(), s.kafka.bootstrap_servers.as_str()), ("from-file", "file:9092"));
        assert_eq!(s.group_id, "from-file.producer");
        assert_eq!(s.topic_name(Topic::Transactions), "from-file.transactions");

        let env = [("KAFKA_PROP_SASL_PASSWORD".to_owned(), "secret".to_owned())];
        let s = Settings::resolve("producer", file, &args(), env).unwrap();
        assert_eq!((s.pipeline.as_str(), s.kafka.bootstrap_servers.as_str()), ("demo", "b:9092"));
        assert_eq!(s.kafka.properties["sasl.password"], "secret");
        assert_eq!(s.kafka.properties["security.protocol"], "SSL");
        assert_eq!(s.http_port, 8080);
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn stage_section_is_parsed_with_defaults() {
        let file = PipelineFile::parse("stages:\n  producer:\n    customers: 12\n").unwrap();
        let s = Settings::resolve("producer", file, &args(), []).unwrap();
        let section: ProducerSection = s.stage_settings().unwrap();
        assert_eq!(section, ProducerSection { customers: 12, seed: 0 });
    }

    #[rstest]
    #[case::missing_name(RuntimeArgs { pipeline_name: None, ..args() }, "", "PIPELINE_NAME")]
    #[case::bad_name(RuntimeArgs { pipeline_name: Some("Bad_Name".into()), ..args() }, "", "PIPELINE_NAME")]
    #[case::missing_bootstrap(RuntimeArgs { bootstrap_servers: None, ..args() }, "", "KAFKA_BOOTSTRAP_SERVERS")]
    #[case::bad_port(RuntimeArgs { http_port: Some("http".into()), ..args() }, "", "HTTP_PORT")]
    #[case::bad_log_format(RuntimeArgs { log_format: Some("xml".into()), ..args() }, "", "LOG_FORMAT")]
    #[case::unknown_top_level_key(args(), "kafak: {}", "kafak")]
    #[case::unknown_kafka_key(args(), "kafka:\n  bootstrap: x", "kafka.bootstrap")]
    #[case::unknown_topic(args(), "topics:\n  trades: {partitions: 3}", "topics.trades")]
    #[case::bad_partitions_type(
        args(),
        "topics:\n  transactions: {partitions: many}",
        "topics.transactions.partitions"
    )]
    #[case::zero_partitions(args(), "topics:\n  pipeline-stats: {partitions: 0}", "topics.pipeline-stats.partitions")]
    #[case::not_co_partitioned(
        args(),
        "topics:\n  transactions: {partitions: 12}",
        "topics.customer-outcomes.partitions"
    )]
    #[case::unknown_stage(args(), "stages:\n  scorer: {}", "stages.scorer")]
    #[case::bootstrap_in_properties(
        args(),
        "kafka:\n  properties: {bootstrap.servers: x}",
        "kafka.properties.bootstrap.servers"
    )]
    fn errors_name_the_key(#[case] args: RuntimeArgs, #[case] yaml: &str, #[case] key: &str) {
        let err =
            PipelineFile::parse(yaml).and_then(|file| Settings::resolve("producer", file, &args, [])).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        let line = err.to_string();
        assert!(line.starts_with(&format!("invalid configuration: {key}: ")), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn stage_section_errors_name_the_full_path() {
        let file = PipelineFile::parse("stages:\n  producer:\n    customers: lots\n").unwrap();
        let s = Settings::resolve("producer", file, &args(), []).unwrap();
        let err = s.stage_settings::<ProducerSection>().unwrap_err();
        assert_eq!(err.key, "stages.producer.customers");
        assert!(err.message.contains("line 3 column 16"), "{err}");
        let file =
            PipelineFile::parse("name: x\nstages:\n  dashboard: {a: 1}\n  producer:\n    seed: 1\n    custmers: 3\n")
                .unwrap();
        let s = Settings::resolve("producer", file, &args(), []).unwrap();
        let err = s.stage_settings::<ProducerSection>().unwrap_err();
        assert_eq!(err.key, "stages.producer.custmers");
        assert!(err.message.contains("unknown field `custmers`") && err.message.contains("line 6"), "{err}");
    }

    #[test]
    fn missing_file_names_pipeline_config() {
        let a = RuntimeArgs { config: Some("/nonexistent/pipeline.yaml".into()), ..args() };
        let err = Settings::load_with_env("producer", &a, []).unwrap_err();
        assert_eq!(err.key, "PIPELINE_CONFIG");
    }
}
