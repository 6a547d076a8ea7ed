# What the scripts driving the REAL DataSHIELD R clients share (test_real_r_clients.R,
# test_relay_dsopal.R), sourced by each as tap.R is; a script loads any other driver
# package it needs (DSMolgenisArmadillo) before it sources this file:
# - DSI, DSOpal and dsBaseClient attached, quietly, and DSI's progress bars off;
# - env(name): an environment variable;
# - the TAP helpers of tap.R (check, close_to, must);
# - `one`: the table's rows from the CSV at DSG_POOLED (sex a factor with both levels,
#   as on the server), and `P`: those rows twice, what the script's two logins hold
#   together (both serve the same table).

suppressPackageStartupMessages({
  library(DSI)
  library(DSOpal)
  library(dsBaseClient)
})
options(datashield.progress = FALSE)

env <- function(name) Sys.getenv(name)
# tap.R is next to the script that Rscript runs (and so next to this file).
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "tap.R"))

one <- read.csv(env("DSG_POOLED"), stringsAsFactors = TRUE)
one$sex <- factor(one$sex, levels = c("female", "male"))
P <- rbind(one, one)
