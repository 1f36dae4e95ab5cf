//! The serde layer: the `McpServer` document as written, before validation.
//!
//! These types are deliberately lenient about values and strict about keys.
//! Every leaf is read as a [`Leaf`] (whatever scalar YAML produced) and every
//! nested mapping as a [`MapOf`], so a wrong type never aborts the document:
//! `validate` turns it into a diagnostic that names the field, and keeps going
//! to find the next problem. Unknown keys are recorded rather than rejected
//! for the same reason. What serde-saphyr itself still rejects is malformed
//! YAML, duplicate keys, non-string keys and documents over budget.
//!
//! Each value keeps its position (via `serde_saphyr::Spanned`), and each
//! struct field also keeps the position of its key, so diagnostics can point
//! at `spec:` rather than at whatever happens to follow it.
//!
//! The same types carry the JSON Schema (`schemars`): a field's schema comes
//! from the second parameter of [`Slot`], because the lenient Rust type says
//! nothing about what a user should write.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A place in a file: 1-based line and column (in characters, as
/// serde-saphyr counts them) and a length in characters. Line 0 is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl Pos {
    pub(crate) fn of(loc: &serde_saphyr::Location) -> Pos {
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Pos {
            line: clamp(loc.line()),
            col: clamp(loc.column()),
            len: clamp(loc.span().len()),
        }
    }
}

/// A value and the place it was written (for an alias, the alias itself).
#[derive(Debug)]
pub(crate) struct At<T> {
    pub value: T,
    pub pos: Pos,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<T>::deserialize(d)?;
        Ok(At {
            value: s.value,
            pos: Pos::of(&s.referenced),
        })
    }
}

/// Any YAML node read where a scalar is expected. Containers are consumed and
/// remembered only as "a list" or "a mapping", for the error message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leaf {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
    List,
    Map,
}

impl Leaf {
    /// How the value reads in a sentence: "a number", "a list", ...
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Leaf::Str(_) => "a string",
            Leaf::Int(_) | Leaf::Float(_) => "a number",
            Leaf::Bool(_) => "a boolean",
            Leaf::Null => "nothing (null)",
            Leaf::List => "a list",
            Leaf::Map => "a mapping",
        }
    }
}

/// What a node turned out to be. Implemented by each lenient shape so one
/// visitor can serve all of them.
trait Shape: Sized {
    const EXPECTING: &'static str;

    fn from_leaf(leaf: Leaf) -> Self;

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::from_leaf(Leaf::Map))
    }

    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::from_leaf(Leaf::List))
    }
}

struct ShapeVisitor<T>(PhantomData<T>);

impl<'de, T: Shape> Visitor<'de> for ShapeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Int(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Int(v.into())))
    }
    fn visit_i128<E>(self, v: i128) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Int(v)))
    }
    fn visit_u128<E>(self, v: u128) -> Result<T, E> {
        // Beyond i128 only matters as "too large", which a float still says.
        Ok(T::from_leaf(
            i128::try_from(v).map_or(Leaf::Float(v as f64), Leaf::Int),
        ))
    }
    fn visit_f64<E>(self, v: f64) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Str(v)))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Null))
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::from_leaf(Leaf::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }
}

macro_rules! deserialize_via_shape {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ShapeVisitor(PhantomData))
            }
        }
    )*};
}

impl Shape for Leaf {
    const EXPECTING: &'static str = "a scalar";
    fn from_leaf(leaf: Leaf) -> Self {
        leaf
    }
}

/// A mapping read field by field. Implemented by [`keyed_struct!`] types and
/// the free-form maps.
pub(crate) trait FromMap: Sized {
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Where a mapping is expected: the mapping, or what was there instead.
#[derive(Debug)]
pub(crate) enum MapOf<T> {
    Map(T),
    Not(Leaf),
}

impl<T: FromMap> Shape for MapOf<T> {
    const EXPECTING: &'static str = "a mapping";
    fn from_leaf(leaf: Leaf) -> Self {
        MapOf::Not(leaf)
    }
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::from_map(map).map(MapOf::Map)
    }
}

impl<'de, T: FromMap> Deserialize<'de> for MapOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor(PhantomData))
    }
}

/// Where a list of scalars is expected: the items, or what was there instead.
#[derive(Debug)]
pub(crate) enum LeafList {
    List(Vec<At<Leaf>>),
    Not(Leaf),
}

impl Shape for LeafList {
    const EXPECTING: &'static str = "a list";
    fn from_leaf(leaf: Leaf) -> Self {
        LeafList::Not(leaf)
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<At<Leaf>>()? {
            items.push(item);
        }
        Ok(LeafList::List(items))
    }
}

/// An `env` value: a plain value, or a mapping that should hold `secretRef`.
#[derive(Debug)]
pub(crate) enum EnvRaw {
    Value(Leaf),
    Secret(RawSecretHolder),
}

impl Shape for EnvRaw {
    const EXPECTING: &'static str = "a string or {secretRef: {name, key}}";
    fn from_leaf(leaf: Leaf) -> Self {
        EnvRaw::Value(leaf)
    }
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        RawSecretHolder::from_map(map).map(EnvRaw::Secret)
    }
}

/// An `external.headers` value: a plain value, or a mapping that should
/// hold `secretRef` (and perhaps `prefix`).
#[derive(Debug)]
pub(crate) enum HeaderRaw {
    Value(Leaf),
    Secret(Box<RawHeaderSecret>),
}

impl Shape for HeaderRaw {
    const EXPECTING: &'static str = "a string or {secretRef: {name, key}, prefix}";
    fn from_leaf(leaf: Leaf) -> Self {
        HeaderRaw::Value(leaf)
    }
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        RawHeaderSecret::from_map(map).map(|h| HeaderRaw::Secret(Box::new(h)))
    }
}

deserialize_via_shape!(Leaf, LeafList, EnvRaw, HeaderRaw);

/// A mapping with free-form keys (`env`, `labels`), in the order written.
/// Duplicate keys never get here: serde-saphyr rejects them first.
#[derive(Debug, Default)]
pub(crate) struct Entries<V>(pub Vec<(At<String>, At<V>)>);

impl<V: for<'de> Deserialize<'de>> FromMap for Entries<V> {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<At<String>>()? {
            out.push((key, map.next_value::<At<V>>()?));
        }
        Ok(Entries(out))
    }
}

/// A struct field: absent, or present with the place of its key and value.
/// `S` is only the schema of what the user should write there.
pub(crate) struct Slot<T, S> {
    pub entry: Option<Entry<T>>,
    _schema: PhantomData<fn() -> S>,
}

pub(crate) struct Entry<T> {
    pub key: Pos,
    pub value: T,
    pub at: Pos,
}

impl<T, S> Default for Slot<T, S> {
    fn default() -> Self {
        Slot {
            entry: None,
            _schema: PhantomData,
        }
    }
}

impl<T: fmt::Debug, S> fmt::Debug for Slot<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some(e) => write!(f, "{:?} @{:?}", e.value, e.at),
            None => f.write_str("absent"),
        }
    }
}

impl<T, S> Slot<T, S> {
    fn fill(&mut self, key: Pos, value: At<T>) {
        self.entry = Some(Entry {
            key,
            value: value.value,
            at: value.pos,
        });
    }

    pub(crate) fn get(&self) -> Option<&Entry<T>> {
        self.entry.as_ref()
    }
}

impl<T, S: JsonSchema> JsonSchema for Slot<T, S> {
    fn inline_schema() -> bool {
        S::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        S::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        S::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        S::json_schema(generator)
    }
}

/// A nested mapping field whose schema is the mapping's own.
pub(crate) type Sub<T> = Slot<MapOf<T>, T>;

/// Declares a mapping type with a fixed set of keys. Each field must be a
/// [`Slot`]. Besides the struct (and its JSON Schema, which denies unknown
/// keys), this generates a reader that records the position of every key
/// and collects unknown keys instead of failing, so that one typo does not
/// hide the rest of the document's problems.
macro_rules! keyed_struct {
    (
        $(#[$meta:meta])*
        struct $name:ident in $context:literal {
            $( $(#[$fmeta:meta])* $field:ident : $fty:ty = $key:literal, )*
        }
    ) => {
        #[derive(Debug, Default, JsonSchema)]
        #[serde(deny_unknown_fields)]
        $(#[$meta])*
        pub(crate) struct $name {
            $( $(#[$fmeta])* #[serde(rename = $key, default)] pub $field: $fty, )*
            /// Keys that are not fields of this mapping.
            #[schemars(skip)]
            pub unknown: Vec<At<String>>,
        }

        impl $name {
            /// How diagnostics name this mapping.
            pub(crate) const CONTEXT: &'static str = $context;
            /// The keys this mapping accepts, for "did you mean" help.
            pub(crate) const FIELDS: &'static [&'static str] = &[$($key),*];
        }

        impl FromMap for $name {
            fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
                let mut out = Self::default();
                while let Some(key) = map.next_key::<At<String>>()? {
                    match key.value.as_str() {
                        $( $key => out.$field.fill(key.pos, map.next_value()?), )*
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            out.unknown.push(key);
                        }
                    }
                }
                Ok(out)
            }
        }
    };
}

/// The `apiVersion` this mcpctl reads.
pub(crate) const API_VERSION: &str = "mcpctl.io/v1";
/// The only `kind`.
pub(crate) const KIND: &str = "McpServer";
/// Valid `spec.transport` values, in the order help text lists them.
pub(crate) const TRANSPORTS: &[&str] = &["stdio", "sse", "streamable-http"];
/// Valid `spec.package.runtime` values.
pub(crate) const RUNTIMES: &[&str] = &["node", "python"];

keyed_struct! {
    /// An mcpctl server definition: one YAML document.
    #[schemars(title = "McpServer", extend("required" = ["apiVersion", "kind", "metadata", "spec"]))]
    struct RawServer in "the document" {
        /// Always `mcpctl.io/v1`.
        api_version: Slot<Leaf, ApiVersionSchema> = "apiVersion",
        /// Always `McpServer`.
        kind: Slot<Leaf, KindSchema> = "kind",
        metadata: Sub<RawMetadata> = "metadata",
        spec: Sub<RawSpec> = "spec",
    }
}

keyed_struct! {
    /// The server's identity.
    #[schemars(rename = "Metadata", extend("required" = ["name"]))]
    struct RawMetadata in "metadata" {
        /// The server's name, unique within a source: a DNS label of lowercase
        /// letters, digits and `-`, at most 63 characters.
        #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
        name: Slot<Leaf, String> = "name",
        /// Free-form labels. They are not part of the spec hash, so changing
        /// them never restarts anything.
        labels: Sub<Entries<Leaf>> = "labels",
    }
}

keyed_struct! {
    /// What to run and how to reach it. Exactly one of `image`, `package` and
    /// `external` is set.
    #[schemars(rename = "Spec", extend("oneOf" = [
        {"required": ["image"]},
        {"required": ["package"]},
        {"required": ["external"]},
    ]))]
    struct RawSpec in "spec" {
        /// How many instances to run. 0 keeps the definition with no instances.
        #[schemars(extend("default" = 1))]
        replicas: Slot<Leaf, u32> = "replicas",
        /// A container image reference, e.g. `ghcr.io/org/server:1.0`.
        #[schemars(length(min = 1))]
        image: Slot<Leaf, String> = "image",
        /// An npm or PyPI package, run with `npx` or `uvx` in a runner image.
        package: Sub<RawPackage> = "package",
        /// A server that mcpctl does not run, only probes.
        external: Sub<RawExternal> = "external",
        /// Arguments after the image's entrypoint (or the package runner's command).
        command: Slot<LeafList, Vec<String>> = "command",
        /// How to speak MCP to the server. Default `stdio`; external servers
        /// default to `streamable-http`.
        transport: Slot<Leaf, TransportSchema> = "transport",
        /// The port the server listens on inside the container; required for
        /// `sse` and `streamable-http`.
        #[schemars(range(min = 1, max = 65535))]
        port: Slot<Leaf, u16> = "port",
        /// The HTTP endpoint path. Default `/mcp`, or `/sse` for `sse`.
        #[schemars(regex(pattern = r"^/\S*$"))]
        path: Slot<Leaf, String> = "path",
        /// Environment variables: a string, or a reference to a secret.
        #[schemars(schema_with = "env_schema")]
        env: Sub<Entries<EnvRaw>> = "env",
        /// Resource limits for the container.
        resources: Sub<RawResources> = "resources",
        /// How long the server may take to answer MCP.
        readiness: Sub<RawReadiness> = "readiness",
    }
}

keyed_struct! {
    /// A package run by a runner image: `node` runs `npx -y NAME@VERSION`,
    /// `python` runs `uvx NAME==VERSION`.
    #[schemars(rename = "Package", extend("required" = ["name", "runtime"]))]
    struct RawPackage in "spec.package" {
        /// The package name, e.g. `@modelcontextprotocol/server-github` or `mcp-server-fetch`.
        #[schemars(length(min = 1))]
        name: Slot<Leaf, String> = "name",
        runtime: Slot<Leaf, RuntimeSchema> = "runtime",
        /// The version, as a quoted string (e.g. `"2025.4.7"`). Default: the latest.
        #[schemars(length(min = 1))]
        version: Slot<Leaf, String> = "version",
    }
}

keyed_struct! {
    /// A server running elsewhere.
    #[schemars(rename = "External", extend("required" = ["url"]))]
    struct RawExternal in "spec.external" {
        /// The server's absolute http(s) URL, with no credentials in it: a
        /// user name or password, or a query parameter such as `token` or
        /// `api_key`, is refused (use `headers`).
        #[schemars(regex(pattern = "^https?://"))]
        url: Slot<Leaf, String> = "url",
        /// HTTP headers sent with every request to the server, such as a
        /// token: a string, or a secret with an optional prefix. Credentials
        /// belong here, never in `url`.
        #[schemars(schema_with = "headers_schema")]
        headers: Sub<Entries<HeaderRaw>> = "headers",
    }
}

keyed_struct! {
    /// A header value's mapping form: a secret, sent after `prefix`.
    #[schemars(rename = "HeaderSecret", extend("required" = ["secretRef"]))]
    struct RawHeaderSecret in "the header value" {
        secret_ref: Sub<RawSecretRef> = "secretRef",
        /// Text sent before the secret's value, e.g. `"Bearer "`. It is not
        /// secret: plans show it.
        #[schemars(regex(pattern = r"^[^\r\n]*$"))]
        prefix: Slot<Leaf, String> = "prefix",
    }
}

keyed_struct! {
    /// An env value's mapping form.
    #[schemars(rename = "SecretValue", extend("required" = ["secretRef"]))]
    struct RawSecretHolder in "the env value" {
        secret_ref: Sub<RawSecretRef> = "secretRef",
    }
}

keyed_struct! {
    /// A secret, looked up when the plan is made: the file
    /// `$MCPCTL_SECRETS_DIR/NAME/KEY`, the variable `MCPCTL_SECRET_<NAME>_<KEY>`,
    /// or on Kubernetes the Secret NAME's key KEY.
    #[schemars(rename = "SecretRef", extend("required" = ["name", "key"]))]
    struct RawSecretRef in "secretRef" {
        #[schemars(regex(pattern = r"^[A-Za-z0-9_][-._A-Za-z0-9]*$"))]
        name: Slot<Leaf, String> = "name",
        #[schemars(regex(pattern = r"^[A-Za-z0-9_][-._A-Za-z0-9]*$"))]
        key: Slot<Leaf, String> = "key",
    }
}

keyed_struct! {
    /// Container limits.
    #[schemars(rename = "Resources")]
    struct RawResources in "spec.resources" {
        /// A memory limit: bytes, or a quantity such as `512Mi`, `1Gi` or `500M`.
        memory: Slot<Leaf, MemorySchema> = "memory",
        /// A CPU limit in CPUs, e.g. `0.5`, or in millicpus, e.g. `"500m"`.
        cpus: Slot<Leaf, CpusSchema> = "cpus",
    }
}

keyed_struct! {
    /// Readiness settings.
    #[schemars(rename = "Readiness")]
    struct RawReadiness in "spec.readiness" {
        /// How long an instance may stay STARTING before it is an error, e.g. `60s` or `5m`.
        #[schemars(extend("default" = "60s"))]
        timeout: Slot<Leaf, DurationSchema> = "timeout",
        /// How often a RUNNING instance is probed, e.g. `15s`.
        #[schemars(extend("default" = "15s"))]
        period: Slot<Leaf, DurationSchema> = "period",
        /// How long an instance must stay up with no restart after its probe passes before it is RUNNING, e.g. `2s`; `0s` promotes at once.
        #[schemars(extend("default" = "2s"))]
        min_ready: Slot<Leaf, DurationSchema> = "minReady",
        /// Restarts before an instance was ever stable that make it a crash loop (ERROR, then back-off).
        #[schemars(extend("default" = 3, "minimum" = 1, "maximum" = 1000))]
        max_restarts: Slot<Leaf, u32> = "maxRestarts",
    }
}

/// Schemas for values that Rust types do not describe by themselves. They
/// exist only to be named in a [`Slot`].
macro_rules! value_schema {
    ($($name:ident => $schema:tt;)*) => {$(
        pub(crate) struct $name;
        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    )*};
}

value_schema! {
    ApiVersionSchema => {"type": "string", "const": API_VERSION};
    KindSchema => {"type": "string", "const": KIND};
    TransportSchema => {"type": "string", "enum": TRANSPORTS, "default": "stdio"};
    RuntimeSchema => {"type": "string", "enum": RUNTIMES};
    MemorySchema => {"oneOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(k|K|M|G|T|Ki|Mi|Gi|Ti)?$"},
    ]};
    CpusSchema => {"oneOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^[0-9]+m$"},
    ]};
    DurationSchema => {"type": "string", "pattern": r"^\s*[0-9]+\s*[a-zA-Z]+"};
}

impl<V> JsonSchema for Entries<V> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "StringMap".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object", "additionalProperties": {"type": "string"}})
    }
}

/// `env` overrides the generic map schema: values may also be secret references.
pub(crate) fn env_schema(generator: &mut SchemaGenerator) -> Schema {
    let secret = generator.subschema_for::<RawSecretHolder>();
    json_schema!({
        "type": "object",
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": {"oneOf": [{"type": "string"}, secret]},
    })
}

/// `external.headers`: HTTP field names, with string or secret values.
pub(crate) fn headers_schema(generator: &mut SchemaGenerator) -> Schema {
    let secret = generator.subschema_for::<RawHeaderSecret>();
    json_schema!({
        "type": "object",
        "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
        "additionalProperties": {"oneOf": [{"type": "string", "pattern": r"^[^\r\n]*$"}, secret]},
    })
}
