# What the scripts that drive the gateway's Armadillo API with httr + jsonlite, as DSI +
# DSMolgenisArmadillo do underneath (test_r_armadillo_client.R, test_r_dsbaseclient.R),
# share, sourced by each as tap.R is:
# - httr and jsonlite attached, quietly;
# - url, user, password, table: DSG_URL, DSG_USER, DSG_PASSWORD and DSG_TABLE;
# - the TAP helpers of tap.R (check, close_to, must).

suppressPackageStartupMessages({
  library(httr)
  library(jsonlite)
})

url <- Sys.getenv("DSG_URL")
user <- Sys.getenv("DSG_USER")
password <- Sys.getenv("DSG_PASSWORD")
table <- Sys.getenv("DSG_TABLE")

# tap.R is next to the script that Rscript runs (and so next to this file).
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "tap.R"))
