//! The build box's side: CloudFormation stack updates under porter's safety rules, waiting for one
//! report per instance from SQS, template lint, and the green/blue Auto Scaling group switch.

pub mod asg_switch;
pub mod aws;
pub mod checks;
pub mod lint;
pub mod stack_update;
pub mod tally;
pub mod waves;
