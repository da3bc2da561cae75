//! CloudFormation templates as both sides read them: the build box (`fleet`: checks, lint,
//! UpdateStack) and a host's metadata watcher (`intake`), which resolves the `hotswap` metadata
//! with the stack's parameters where DescribeStackResource carries none. Pure: no AWS calls.

pub mod intrinsics;
pub mod template;
