//! Features: how named values become the model's input columns. Pure, no I/O.
//!
//! - [`value`]: a feature value (number or category).
//! - [`transform`]: standardize, min-max, log1p, clip, one-hot, bucketize.
//! - [`definition`]: a model input feature (source, transforms, default) as the spec writes it.
//! - [`view`]: feature views (Feast's vocabulary): an entity key, typed features, a TTL.
//! - [`assemble`]: request features ∪ stored features → one input row, with what was defaulted.

pub mod assemble;
pub mod definition;
pub mod transform;
pub mod value;
pub mod view;

pub use assemble::{assemble_row, assemble_values, short_list, AssembleError, Assembled};
pub use definition::Feature;
pub use transform::Transform;
pub use value::FeatureValue;
pub use view::{FeatureType, FeatureView};
