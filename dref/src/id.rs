//! Typed identifiers of distributed refs.

use std::fmt;
use std::marker::PhantomData;
use std::panic::Location;

use crate::engine::Key;
use crate::layout::REF_PREFIX;

/// Names a ref explicitly: every node that uses the same name (and type)
/// shares the same record.
pub struct ManualId<T> {
    name: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> ManualId<T> {
    /// A ref named `name`. Names are free-form strings.
    pub fn new(name: impl Into<String>) -> Self {
        ManualId {
            name: name.into(),
            _type: PhantomData,
        }
    }

    /// The name given to [`new`](ManualId::new).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T> Clone for ManualId<T> {
    fn clone(&self) -> Self {
        ManualId::new(self.name.clone())
    }
}

impl<T> fmt::Debug for ManualId<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualId").field(&self.name).finish()
    }
}

/// Names a ref after the place in the source that creates it (file, line,
/// column) and its value type, so that the same binary running on every node
/// names the same ref without anyone choosing a name.
///
/// Moving the call in the source renames the ref: use a [`ManualId`] for
/// state that must survive a redeploy with changed code.
pub struct AutoId<T> {
    location: &'static Location<'static>,
    _type: PhantomData<fn() -> T>,
}

impl<T> AutoId<T> {
    /// The id of the calling source location.
    #[track_caller]
    pub fn here() -> Self {
        AutoId {
            location: Location::caller(),
            _type: PhantomData,
        }
    }

    /// The source location this id was taken at.
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }
}

impl<T> Clone for AutoId<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for AutoId<T> {}

impl<T> fmt::Debug for AutoId<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AutoId").field(&self.location).finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Something that names a ref holding a `T`: a [`ManualId`] or an [`AutoId`].
pub trait RefId<T>: sealed::Sealed {
    /// The store key of the ref.
    fn key(&self) -> Key;
}

impl<T> sealed::Sealed for ManualId<T> {}
impl<T> sealed::Sealed for AutoId<T> {}

impl<T> RefId<T> for ManualId<T> {
    fn key(&self) -> Key {
        Key::from(format!("{REF_PREFIX}{}", self.name))
    }
}

impl<T> RefId<T> for AutoId<T> {
    fn key(&self) -> Key {
        Key::from(format!(
            "{REF_PREFIX}auto/{}:{}:{}/{}",
            self.location.file(),
            self.location.line(),
            self.location.column(),
            std::any::type_name::<T>()
        ))
    }
}
