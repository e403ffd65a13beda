//! [`Settings`]: a flag's optional settings as one value, for services configured from files
//! (with the feature `serde`, it deserializes; durations as `"30s"`, `"1m 30s"`, `"500ms"`).

use std::time::Duration;

use crate::builder::FlagBuilder;

/// The optional settings of a [`FlagBuilder`] as data: everything but the flag's name, the
/// process and the TLS connector. Unset fields keep the builder's value (the Go flag's
/// defaults), so a file only names what it changes. Apply with [`FlagBuilder::settings`].
///
/// With the feature `serde` it implements `Deserialize`, refusing unknown keys (a typo is an
/// error naming the key, not a silent default); durations are human-readable (`"30s"`).
///
/// ```
/// # use std::time::Duration;
/// let mut settings = leadership_tokio::Settings::default();
/// settings.interval = Some(Duration::from_secs(10));
/// settings.table = Some("ops.leadership_flags".into());
/// let builder = leadership_tokio::Flag::builder("report", "pod-a").settings(&settings);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct Settings {
    /// A libpq connection string or URL ([`FlagBuilder::connect_str`]).
    pub url: Option<String>,
    /// The lease ([`FlagBuilder::interval`]).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub interval: Option<Duration>,
    /// The statement timeout ([`FlagBuilder::timeout`]).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub timeout: Option<Duration>,
    /// The jitter of the schedule, a fraction ([`FlagBuilder::jitter`]).
    pub jitter: Option<f64>,
    /// The clock-rate margin ([`FlagBuilder::margin`]).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub margin: Option<Duration>,
    /// The retry interval after a failure ([`FlagBuilder::retry_interval`]).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub retry_interval: Option<Duration>,
    /// How long before the deadline the work is told to stop ([`FlagBuilder::stop_ahead`]).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stop_ahead: Option<Duration>,
    /// The connect timeout ([`FlagBuilder::connect_timeout`]).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub connect_timeout: Option<Duration>,
    /// The table, `name` or `schema.name` ([`FlagBuilder::table`],
    /// [`FlagBuilder::table_in_schema`]).
    pub table: Option<String>,
    /// The metrics prefix ([`FlagBuilder::metrics_prefix`]).
    pub metrics_prefix: Option<String>,
}

impl<K> FlagBuilder<K> {
    /// Applies every setting that `settings` sets; the others keep their values. Later
    /// setters override it, so code can pin what a file must not change.
    ///
    /// ```
    /// let settings = leadership_tokio::Settings::default();
    /// let builder = leadership_tokio::Flag::builder("report", "").settings(&settings);
    /// ```
    pub fn settings(mut self, settings: &Settings) -> Self {
        if let Some(url) = &settings.url {
            self = self.connect_str(url);
        }
        if let Some(v) = settings.interval {
            self = self.interval(v);
        }
        if let Some(v) = settings.timeout {
            self = self.timeout(v);
        }
        if let Some(v) = settings.jitter {
            self = self.jitter(v);
        }
        if let Some(v) = settings.margin {
            self = self.margin(v);
        }
        if let Some(v) = settings.retry_interval {
            self = self.retry_interval(v);
        }
        if let Some(v) = settings.stop_ahead {
            self = self.stop_ahead(v);
        }
        if let Some(v) = settings.connect_timeout {
            self = self.connect_timeout(v);
        }
        if let Some(table) = &settings.table {
            self = match table.split_once('.') {
                Some((schema, name)) => self.table_in_schema(schema, name),
                None => self.table(table),
            };
        }
        if let Some(prefix) = &settings.metrics_prefix {
            self = self.metrics_prefix(prefix);
        }
        self
    }
}
