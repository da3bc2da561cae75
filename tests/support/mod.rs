pub mod images;
pub mod load;
