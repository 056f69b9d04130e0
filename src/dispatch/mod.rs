//! Dispatching: the `Dispatcher` handle, its sans-IO core and its driver.
