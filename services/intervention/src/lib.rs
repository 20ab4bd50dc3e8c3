//! `intervention`: turns RiskScores into actions — nudges, payment holidays, agent
//! calls — by configured rules with per-customer cooldowns and daily capacities, and
//! writes each action to the `interventions` audit trail, exactly once.
//!
//! - [`rules`]: the rule config and its condition language (pure).
//! - [`engine`]: decisions, cooldowns, capacity and the state records (pure).
//! - [`stage`]: the engine as a processor of the shared exactly-once loop.
//! - [`settings`]: `stages.intervention` in the pipeline file.

pub mod engine;
pub mod rules;
pub mod settings;
pub mod stage;
