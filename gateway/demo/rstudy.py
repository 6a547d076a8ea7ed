"""The demo's study in R (DSI + DSMolgenisArmadillo + dsBaseClient through the relay).

Kept as a string, not a .R file, so that it ships inside the Python package without
package-data settings; `dsgateway demo` writes it to ``<workdir>/study.R``.
"""

__all__ = ["R_STUDY"]

R_STUDY = """\
# The demo's study from R: DSI + DSMolgenisArmadillo + dsBaseClient through the
# coordinator's relay, one relay token per station from one login at the coordinator.
# `dsgateway demo` runs this when those packages are installed; set DSG_COORDINATOR,
# DSG_RELAY, DSG_USER and DSG_PASSWORD (see credentials.json in the demo's folder).
library(httr)
library(DSI)
library(DSMolgenisArmadillo)
library(dsBaseClient)

coordinator <- Sys.getenv("DSG_COORDINATOR")
relay <- Sys.getenv("DSG_RELAY")
api <- function(verb, path, token = NULL, body = NULL) {
  auth <- if (is.null(token)) NULL else add_headers(Authorization = paste("Bearer", token))
  r <- VERB(verb, paste0(coordinator, "/api", path), auth, body = body, encode = "json")
  stop_for_status(r)
  content(r)
}

login <- api("POST", "/auth/login",
             body = list(username = Sys.getenv("DSG_USER"), password = Sys.getenv("DSG_PASSWORD")))
access <- login$access_token
study <- api("GET", "/collaborations", access)[[1]]
nodes <- api("GET", paste0("/nodes?collaboration_id=", study$id), access)

builder <- newDSLoginBuilder()
for (node in nodes) {
  token <- api("POST", "/auth/relay-token", access, list(node_id = node$id))$token
  # dsBaseClient turns server names into R code (ds.table): "station-a" would not parse.
  builder$append(server = gsub("[^A-Za-z0-9_]", "_", node$name), url = relay,
                 token = token, driver = "ArmadilloDriver", profile = "default",
                 table = "ms/registry/covid19")
}
conns <- datashield.login(builder$build(), assign = TRUE, symbol = "D")

dims <- ds.dim("D", datasources = conns)
print(dims)
age <- ds.mean("D$age", type = "both", datasources = conns)
print(age)
edss <- ds.var("D$edss", type = "both", datasources = conns)
print(edss)
# station-c holds cells of 1 or 2 patients: it refuses, the others are combined
tab <- ds.table("D$dmt", "D$severe", datasources = conns)
print(tab$output.list$TABLES.COMBINED_all.sources_counts)
fit <- ds.glm(severe ~ dmt + age + sex + edss, data = "D", family = "binomial",
              datasources = conns, viewIter = FALSE)
print(fit$coefficients)
# ds.histogram needs each station's `datashield.seed` (set in its profile): its blurred
# range and noise come from it. Drawn on the screen in R, into nothing under Rscript.
if (!interactive()) pdf(NULL)
hist_age <- ds.histogram("D$age", type = "combine", datasources = conns)
print(data.frame(lower = head(hist_age$breaks, -1), upper = hist_age$breaks[-1],
                 count = hist_age$counts))
datashield.logout(conns)

# The numbers, for comparing with the Python study (study.json), if asked for.
out <- Sys.getenv("DSG_R_RESULTS")
if (nzchar(out)) {
  jsonlite::write_json(list(
    dims = as.numeric(dims[[length(dims)]]),
    age_mean = age$Global.Mean[1, "EstimatedMean"],
    edss_var = edss$Global.Variance[1, "EstimatedVar"],
    table = tab$output.list$TABLES.COMBINED_all.sources_counts,
    histogram = list(breaks = hist_age$breaks, counts = hist_age$counts),
    glm = list(names = rownames(fit$coefficients),
               estimate = unname(fit$coefficients[, "Estimate"]),
               se = unname(fit$coefficients[, "Std. Error"]))
  ), out, digits = NA, auto_unbox = TRUE)
}
"""
