//! Transform plugins: batch in, batches out. Implement [`Transform`] and call
//! [`export_transform!`](crate::export_transform).

use std::any::Any;
use std::cell::RefCell;

use crate::{ChangeBatch, Config};

/// A row transform.
pub trait Transform: Sized + 'static {
    /// Builds the transform from its settings.
    fn configure(config: Config) -> Result<Self, String>;

    /// Turns one batch into zero or more batches.
    fn apply(&mut self, batch: ChangeBatch) -> Result<Vec<ChangeBatch>, String>;
}

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn __configure<T: Transform>(config: String) -> Result<(), String> {
    let transform = T::configure(Config::parse(&config)?)?;
    INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(transform)));
    Ok(())
}

#[doc(hidden)]
pub fn __apply<T: Transform>(batch: ChangeBatch) -> Result<Vec<ChangeBatch>, String> {
    INSTANCE.with(|i| {
        let mut slot = i.borrow_mut();
        let transform = slot
            .as_mut()
            .and_then(|t| t.downcast_mut::<T>())
            .ok_or_else(|| "the host called the transform before configure".to_string())?;
        transform.apply(batch)
    })
}

/// Exports a type implementing [`Transform`] as the plugin's `transform` interface.
#[macro_export]
macro_rules! export_transform {
    ($transform:ident) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct MoonlinkTransformExport;
            impl $crate::bindings::transform::exports::moonlink::plugin::transform::Guest
                for MoonlinkTransformExport
            {
                fn configure(config: String) -> Result<(), String> {
                    $crate::transform::__configure::<$transform>(config)
                }
                fn apply(batch: $crate::ChangeBatch) -> Result<Vec<$crate::ChangeBatch>, String> {
                    $crate::transform::__apply::<$transform>(batch)
                }
            }
            $crate::bindings::transform::__export_transform_world!(
                MoonlinkTransformExport with_types_in $crate::bindings::transform
            );
        };
    };
}
