//! Entity state kept in step across instances, with a conflict strategy per entity type.
//!
//! - **Last writer wins, per field**: every field remembers the hybrid-logical timestamp of its
//!   last write; a change replaces a field only with a later timestamp. A field set to null is
//!   deleted, and the deletion keeps its timestamp (a tombstone) so an older write arriving
//!   later cannot bring the field back. Applying the same changes in any order, any number of
//!   times, gives the same state.
//! - **Version vectors**: a change carries the whole state after it and the vector of the
//!   changes it has seen. The store keeps the changes no other change has seen (the heads): a
//!   change that has seen every head replaces them; an older or repeated one is ignored; a
//!   concurrent one becomes another head. The set of heads depends only on which changes were
//!   applied, not on their order. With more than one head the visible state is the merge
//!   function registered for the type, folded over the heads in timestamp order
//!   (`merge(older, newer)`), so every instance with the same heads shows the same state.
//!   Without a merge function the latest head is shown and the concurrent heads are returned
//!   as a [`Conflict`] for the caller to record — never dropped silently. The next local
//!   change has seen every head and so resolves them into one.
//!
//! The store itself does no I/O and is not locked; `StateSyncManager` owns one behind a mutex.

use super::hlc::{HybridClock, Timestamp};
use super::vv::{Causality, VersionVector};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Largest accepted delta, as JSON text.
pub const MAX_DELTA_BYTES: usize = 64 * 1024;
/// Largest accepted entity type name or id, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// How concurrent changes to one entity type are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Per-field last writer wins on hybrid logical clock timestamps.
    LastWriterWins,
    /// Version vectors; concurrent changes go to the type's merge function.
    VersionVectors,
}

impl Strategy {
    /// Parses `lww` / `last_writer_wins` or `vv` / `version_vectors`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "lww" | "last_writer_wins" => Ok(Strategy::LastWriterWins),
            "vv" | "version_vectors" => Ok(Strategy::VersionVectors),
            other => Err(Error::InvalidArgument(format!(
                "unknown conflict strategy {other:?} (expected lww or version_vectors)"
            ))),
        }
    }
}

/// The two concurrent states a merge function is given, ordered by timestamp.
#[derive(Debug)]
pub struct MergeRequest<'a> {
    pub entity_type: &'a str,
    pub id: &'a str,
    /// The state with the earlier timestamp.
    pub older: &'a Map<String, Value>,
    /// The state with the later timestamp.
    pub newer: &'a Map<String, Value>,
}

/// Resolves two concurrent states into one. It must depend only on its arguments, so that
/// every instance computes the same result.
pub type MergeFn = Arc<dyn Fn(&MergeRequest<'_>) -> Result<Map<String, Value>> + Send + Sync>;

/// One change as it travels between instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub entity_type: String,
    pub id: String,
    /// When the change was made, on its instance's hybrid logical clock.
    pub hlc: Timestamp,
    #[serde(flatten)]
    pub body: ChangeBody,
}

/// What a change carries, by strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "strategy")]
pub enum ChangeBody {
    /// Last writer wins: the changed fields; null deletes a field.
    #[serde(rename = "lww")]
    Fields { delta: Map<String, Value> },
    /// Version vectors: the whole state after the change and the changes it has seen.
    #[serde(rename = "vv")]
    State { state: Map<String, Value>, vv: VersionVector },
}

/// A change's body borrowed from where it was read.
#[derive(Clone, Copy)]
pub(crate) enum BodyRef<'a> {
    Fields(&'a Map<String, Value>),
    State(&'a Map<String, Value>, &'a VersionVector),
}

// The names of a change being applied, borrowed.
struct ChangeRef<'a> {
    entity_type: &'a str,
    id: &'a str,
    hlc: &'a Timestamp,
}

/// Concurrent changes that no merge function resolved: `kept` is the state now shown (the
/// latest concurrent change), `lost` the other concurrent states, each still held until a
/// later change resolves them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub entity_type: String,
    pub id: String,
    pub kept: Map<String, Value>,
    pub kept_hlc: Timestamp,
    pub kept_vv: VersionVector,
    pub lost: Vec<ConcurrentState>,
    /// Why no merge resolved it: none registered, or the merge function's error.
    pub reason: String,
}

/// One concurrent state of a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrentState {
    pub state: Map<String, Value>,
    pub hlc: Timestamp,
    pub vv: VersionVector,
}

fn lost_entry((hlc, vv, state): (Timestamp, VersionVector, Map<String, Value>)) -> ConcurrentState {
    ConcurrentState { state, hlc, vv }
}

/// What applying a change did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The state changed; the names of the fields whose visible value changed.
    Applied { fields: Vec<String> },
    /// Nothing changed: the change was already applied, or newer writes had replaced it.
    Unchanged,
    /// Concurrent states were merged by the type's merge function.
    Merged,
    /// Concurrent states with no merge: the later one was kept and the conflict is returned.
    Conflict(Box<Conflict>),
}

impl Outcome {
    /// `{"outcome":"applied","fields":[…]}`, `{"outcome":"unchanged"}`, `{"outcome":"merged"}`
    /// or `{"outcome":"conflict","conflict":{…}}`.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Applied { fields } => serde_json::json!({"outcome": "applied", "fields": fields}),
            Outcome::Unchanged => serde_json::json!({"outcome": "unchanged"}),
            Outcome::Merged => serde_json::json!({"outcome": "merged"}),
            Outcome::Conflict(c) => serde_json::json!({"outcome": "conflict", "conflict": c}),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct LwwEntity {
    // Field → (value, timestamp of its last write); a null value is a deleted field.
    fields: BTreeMap<String, (Value, Timestamp)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Head {
    state: Map<String, Value>,
    vv: VersionVector,
    hlc: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct VvEntity {
    // The changes no applied change has seen, in timestamp order; never empty once created.
    heads: Vec<Head>,
    // The visible state, resolved from the heads when they last changed.
    shown: Map<String, Value>,
}

impl VvEntity {
    // Every head's vector joined: what a change made now has seen.
    fn seen(&self) -> VersionVector {
        let mut vv = VersionVector::new();
        for h in &self.heads {
            vv.merge(&h.vv);
        }
        vv
    }
}

/// Everything a store holds, for snapshots. Entities are keyed `type` → `id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreImage {
    types: BTreeMap<String, Strategy>,
    lww: BTreeMap<String, BTreeMap<String, LwwEntity>>,
    vv: BTreeMap<String, BTreeMap<String, VvEntity>>,
}

impl StoreImage {
    /// The visible state of every entity, by type and id (what two converged instances share).
    pub fn visible(&self) -> BTreeMap<String, BTreeMap<String, Map<String, Value>>> {
        let mut out: BTreeMap<String, BTreeMap<String, Map<String, Value>>> = BTreeMap::new();
        for (t, entities) in &self.lww {
            for (id, e) in entities {
                out.entry(t.clone()).or_default().insert(id.clone(), visible_fields(e));
            }
        }
        for (t, entities) in &self.vv {
            for (id, e) in entities {
                out.entry(t.clone()).or_default().insert(id.clone(), e.shown.clone());
            }
        }
        out
    }

    /// How many entities the image holds.
    pub fn entity_count(&self) -> usize {
        self.lww.values().map(BTreeMap::len).sum::<usize>() + self.vv.values().map(BTreeMap::len).sum::<usize>()
    }
}

/// The entity state of one instance.
#[derive(Default)]
pub struct EntityStore {
    image: StoreImage,
    merges: HashMap<String, MergeFn>,
}

impl std::fmt::Debug for EntityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityStore")
            .field("types", &self.image.types)
            .field("entities", &self.image.entity_count())
            .finish()
    }
}

impl EntityStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares an entity type and its strategy. Declaring it again with the same strategy
    /// is a no-op; with another strategy it is refused, since the stored state would not fit.
    pub fn register_type(&mut self, entity_type: &str, strategy: Strategy) -> Result<()> {
        check_name("entity type", entity_type)?;
        match self.image.types.get(entity_type) {
            Some(s) if *s == strategy => Ok(()),
            Some(s) => {
                Err(Error::State(format!("entity type {entity_type:?} is already registered with strategy {s:?}")))
            }
            None => {
                self.image.types.insert(entity_type.to_string(), strategy);
                Ok(())
            }
        }
    }

    /// Sets (or, with None, removes) the merge function of a version-vector type. It resolves
    /// the concurrent states of changes applied from then on.
    pub fn set_merge(&mut self, entity_type: &str, merge: Option<MergeFn>) -> Result<()> {
        match self.strategy(entity_type)? {
            Strategy::VersionVectors => {}
            Strategy::LastWriterWins => {
                return Err(Error::InvalidArgument(format!(
                    "entity type {entity_type:?} resolves by last writer wins; only version-vector types take a merge function"
                )))
            }
        }
        match merge {
            Some(m) => self.merges.insert(entity_type.to_string(), m),
            None => self.merges.remove(entity_type),
        };
        Ok(())
    }

    /// The strategy of a registered type.
    pub fn strategy(&self, entity_type: &str) -> Result<Strategy> {
        self.image
            .types
            .get(entity_type)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("unknown entity type {entity_type:?}")))
    }

    /// Makes a local change: stamps it on `clock`, applies it here and returns it for the
    /// other instances.
    pub fn local_change(
        &mut self,
        clock: &HybridClock,
        entity_type: &str,
        id: &str,
        delta: &Map<String, Value>,
    ) -> Result<(Change, Outcome)> {
        let strategy = self.strategy(entity_type)?;
        check_name("entity id", id)?;
        check_delta(delta)?;
        let hlc = clock.now();
        let body = match strategy {
            Strategy::LastWriterWins => ChangeBody::Fields { delta: delta.clone() },
            Strategy::VersionVectors => {
                let (mut state, mut vv) = match self.image.vv.get(entity_type).and_then(|m| m.get(id)) {
                    Some(e) => (e.shown.clone(), e.seen()),
                    None => (Map::new(), VersionVector::new()),
                };
                for (k, v) in delta {
                    if v.is_null() {
                        state.remove(k);
                    } else {
                        state.insert(k.clone(), v.clone());
                    }
                }
                vv.increment(clock.instance());
                ChangeBody::State { state, vv }
            }
        };
        let change = Change { entity_type: entity_type.to_string(), id: id.to_string(), hlc, body };
        let outcome = self.apply(&change)?;
        Ok((change, outcome))
    }

    /// Applies a change from any instance (this one included). Idempotent.
    pub fn apply(&mut self, change: &Change) -> Result<Outcome> {
        let body = match &change.body {
            ChangeBody::Fields { delta } => BodyRef::Fields(delta),
            ChangeBody::State { state, vv } => BodyRef::State(state, vv),
        };
        self.apply_ref(&change.entity_type, &change.id, &change.hlc, body)
    }

    /// [`apply`](Self::apply) for a change whose parts are borrowed (from a received envelope,
    /// or from the caller of a local change), so nothing is copied that is not kept.
    pub(crate) fn apply_ref(
        &mut self,
        entity_type: &str,
        id: &str,
        hlc: &Timestamp,
        body: BodyRef<'_>,
    ) -> Result<Outcome> {
        let strategy = self.strategy(entity_type)?;
        check_name("entity id", id)?;
        match (body, strategy) {
            (BodyRef::Fields(delta), Strategy::LastWriterWins) => {
                check_delta(delta)?;
                Ok(self.apply_fields(entity_type, id, hlc, delta))
            }
            (BodyRef::State(state, vv), Strategy::VersionVectors) => {
                check_delta(state)?;
                let change = ChangeRef { entity_type, id, hlc };
                Ok(self.apply_state(&change, state, vv))
            }
            _ => Err(Error::InvalidArgument(format!(
                "a change to {entity_type:?} does not match the type's strategy {strategy:?}"
            ))),
        }
    }

    /// A local last-writer-wins change: stamps it on `clock` and applies it here. Returns the
    /// timestamp (the change to send is the same delta with it).
    pub(crate) fn local_fields(
        &mut self,
        clock: &HybridClock,
        entity_type: &str,
        id: &str,
        delta: &Map<String, Value>,
    ) -> Result<(Timestamp, Outcome)> {
        if self.strategy(entity_type)? != Strategy::LastWriterWins {
            return Err(Error::InvalidArgument(format!("entity type {entity_type:?} is not last writer wins")));
        }
        check_name("entity id", id)?;
        check_delta(delta)?;
        let hlc = clock.now();
        let outcome = self.apply_fields(entity_type, id, &hlc, delta);
        Ok((hlc, outcome))
    }

    fn apply_fields(&mut self, entity_type: &str, id: &str, hlc: &Timestamp, delta: &Map<String, Value>) -> Outcome {
        // Keys are copied only for an entity type or entity seen the first time.
        if !self.image.lww.contains_key(entity_type) {
            self.image.lww.insert(entity_type.to_string(), BTreeMap::new());
        }
        let by_id = self.image.lww.get_mut(entity_type).expect("inserted above");
        if !by_id.contains_key(id) {
            by_id.insert(id.to_string(), LwwEntity::default());
        }
        let entity = by_id.get_mut(id).expect("inserted above");
        let mut fields = Vec::new();
        for (name, value) in delta {
            match entity.fields.get_mut(name) {
                Some((was, ts)) => {
                    if *hlc > *ts {
                        if was != value {
                            *was = value.clone();
                            fields.push(name.clone());
                        }
                        ts.wall_ms = hlc.wall_ms;
                        ts.logical = hlc.logical;
                        ts.instance.clone_from(&hlc.instance);
                    }
                }
                None => {
                    entity.fields.insert(name.clone(), (value.clone(), hlc.clone()));
                    if !value.is_null() {
                        fields.push(name.clone());
                    }
                }
            }
        }
        if fields.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Applied { fields }
        }
    }

    fn apply_state(&mut self, change: &ChangeRef<'_>, state: &Map<String, Value>, vv: &VersionVector) -> Outcome {
        let merge = self.merges.get(change.entity_type).cloned();
        let entity =
            self.image.vv.entry(change.entity_type.to_string()).or_default().entry(change.id.to_string()).or_default();
        if entity.heads.iter().any(|h| matches!(vv.compare(&h.vv), Causality::Before | Causality::Equal)) {
            return Outcome::Unchanged;
        }
        let before = std::mem::take(&mut entity.shown);
        entity.heads.retain(|h| h.vv.compare(vv) != Causality::Before);
        let at = entity.heads.partition_point(|h| h.hlc < *change.hlc);
        entity.heads.insert(at, Head { state: state.clone(), vv: vv.clone(), hlc: change.hlc.clone() });
        let (after, failure) = resolve(merge.as_ref(), change.entity_type, change.id, entity);
        let fields = changed_fields(&before, &after);
        entity.shown = after;
        if entity.heads.len() == 1 {
            return Outcome::Applied { fields };
        }
        let reason = match (merge.is_some(), failure) {
            (true, None) => return Outcome::Merged,
            (_, Some(e)) => format!("the merge function failed: {e}"),
            (false, None) => "no merge function is registered for the type".to_string(),
        };
        let (kept, lost) = entity.heads.split_last().expect("at least two heads");
        Outcome::Conflict(Box::new(Conflict {
            entity_type: change.entity_type.to_string(),
            id: change.id.to_string(),
            kept: kept.state.clone(),
            kept_hlc: kept.hlc.clone(),
            kept_vv: kept.vv.clone(),
            lost: lost.iter().map(|h| (h.hlc.clone(), h.vv.clone(), h.state.clone())).map(lost_entry).collect(),
            reason,
        }))
    }

    /// The visible state of one entity, or None when this instance has never seen it.
    pub fn snapshot(&self, entity_type: &str, id: &str) -> Result<Option<Map<String, Value>>> {
        Ok(match self.strategy(entity_type)? {
            Strategy::LastWriterWins => self.image.lww.get(entity_type).and_then(|m| m.get(id)).map(visible_fields),
            Strategy::VersionVectors => self.image.vv.get(entity_type).and_then(|m| m.get(id)).map(|e| e.shown.clone()),
        })
    }

    /// A store with the same entity types and merge functions and no state.
    pub fn empty_like(&self) -> EntityStore {
        let image = StoreImage { types: self.image.types.clone(), ..StoreImage::default() };
        EntityStore { image, merges: self.merges.clone() }
    }

    /// Everything the store holds (for snapshots and comparisons).
    pub fn image(&self) -> &StoreImage {
        &self.image
    }

    /// Replaces the state with an image (a snapshot being restored). Merge functions stay.
    pub fn restore(&mut self, image: StoreImage) {
        self.image = image;
    }

    /// Joins an image into the state, as if every change it holds were applied here: fields
    /// and heads this store already has newer versions of stay. Types the image declares
    /// are registered; a type declared here with another strategy is an error, and then
    /// nothing is changed.
    pub fn absorb(&mut self, image: &StoreImage) -> Result<()> {
        for (t, strategy) in &image.types {
            if self.image.types.get(t).is_some_and(|s| s != strategy) {
                return Err(Error::State(format!("entity type {t:?} has another strategy in the snapshot")));
            }
        }
        for (t, strategy) in &image.types {
            self.register_type(t, *strategy)?;
        }
        for (t, entities) in &image.lww {
            for (id, e) in entities {
                for (field, (value, hlc)) in &e.fields {
                    let mut delta = Map::new();
                    delta.insert(field.clone(), value.clone());
                    let change = Change {
                        entity_type: t.clone(),
                        id: id.clone(),
                        hlc: hlc.clone(),
                        body: ChangeBody::Fields { delta },
                    };
                    self.apply(&change)?;
                }
            }
        }
        for (t, entities) in &image.vv {
            for (id, e) in entities {
                for h in &e.heads {
                    let body = ChangeBody::State { state: h.state.clone(), vv: h.vv.clone() };
                    self.apply(&Change { entity_type: t.clone(), id: id.clone(), hlc: h.hlc.clone(), body })?;
                }
            }
        }
        Ok(())
    }
}

// The visible state of a version-vector entity and, when the merge failed, its error: the one
// head, or the merge folded over the heads in timestamp order, or (no merge, or it failed) the
// latest head.
fn resolve(merge: Option<&MergeFn>, entity_type: &str, id: &str, e: &VvEntity) -> (Map<String, Value>, Option<Error>) {
    let Some((first, rest)) = e.heads.split_first() else { return (Map::new(), None) };
    let latest = e.heads.last().map(|h| h.state.clone()).unwrap_or_default();
    let Some(merge) = merge.filter(|_| !rest.is_empty()) else { return (latest, None) };
    let mut acc = first.state.clone();
    for h in rest {
        match merge(&MergeRequest { entity_type, id, older: &acc, newer: &h.state }) {
            Ok(m) => acc = m,
            Err(e) => return (latest, Some(e)),
        }
    }
    (acc, None)
}

fn visible_fields(e: &LwwEntity) -> Map<String, Value> {
    e.fields.iter().filter(|(_, (v, _))| !v.is_null()).map(|(k, (v, _))| (k.clone(), v.clone())).collect()
}

fn changed_fields(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = before.keys().chain(after.keys()).cloned().collect();
    names.sort();
    names.dedup();
    names.retain(|k| before.get(k) != after.get(k));
    names
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidArgument(format!("{what} is longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(())
}

fn check_delta(delta: &Map<String, Value>) -> Result<()> {
    if delta.keys().any(String::is_empty) {
        return Err(Error::InvalidArgument("a field name must not be empty".into()));
    }
    Ok(())
}

/// Parses a delta: a JSON object of at most [`MAX_DELTA_BYTES`] bytes.
pub fn parse_delta(json: &str) -> Result<Map<String, Value>> {
    if json.len() > MAX_DELTA_BYTES {
        return Err(Error::InvalidArgument(format!("a delta is {} bytes; the limit is {MAX_DELTA_BYTES}", json.len())));
    }
    match serde_json::from_str::<Value>(json).map_err(|e| Error::Json(format!("delta: {e}")))? {
        Value::Object(map) => Ok(map),
        other => Err(Error::Json(format!("a delta must be a JSON object, not {}", kind(&other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
