# dsgateway's R client-image runner: logs in to the node's gateway and runs the
# researcher's R script (the contract: docs/client-images.md).
#
#   DSGATEWAY_URL, DSGATEWAY_TOKEN, DSGATEWAY_PROFILE   the gateway, a short-lived token,
#                                                       the DataSHIELD profile
#   /input/parameters.json  {"script": "analysis.R",               (a file in /input)
#                            "tables": {"D": "demo/cohort/patients"}}  (assigned first)
#   /output                 the script's JSON, CSV or PNG files
#   DSGATEWAY_STATIONS      (tasks created with "relay": true) JSON: every target
#                           station's name, url (the relay, through the run's proxy) and
#                           relay token; then conns holds one connection per station
#
# The script is evaluated with these defined:
#   conns       DSI connections (one, "node"; or one per station through the relay,
#               named by station with letters, digits and "_" only: node-a is node_a)
#               when DSI and DSMolgenisArmadillo are installed (the published
#               image), else NULL; use dsBaseClient as usual (conns is also found
#               when `datasources` is left out):
#               ds.mean("D$age", type = "combine", datasources = conns)
#   stations    the station names (DSGATEWAY_STATIONS), or character(0)
#   dsg_aggregate(expr, station = NULL), dsg_assign(symbol, expr, station = NULL),
#   dsg_load_table(symbol, table, station = NULL)
#               the Armadillo API spoken with httr directly (any image with httr);
#               `station`: one of `stations` (through the relay), NULL: this node
#   parameters  the parsed parameters.json;  output_dir  "/output"
#   write_json(name, value)  writes output_dir/name
# Exit status 0 means success. On an error the log shows it and, with DSI, each
# station's own error (DSI::datashield.errors(), which nobody can ask for afterwards).

suppressPackageStartupMessages({
  library(httr)
  library(jsonlite)
})

input_dir <- Sys.getenv("DSGATEWAY_INPUT", "/input")
output_dir <- Sys.getenv("DSGATEWAY_OUTPUT", "/output")
gateway_url <- sub("/+$", "", Sys.getenv("DSGATEWAY_URL"))
gateway_token <- Sys.getenv("DSGATEWAY_TOKEN")
gateway_profile <- Sys.getenv("DSGATEWAY_PROFILE", "default")

fail <- function(message, status = 2L) {
  cat("dsgateway runner: ", message, "\n", file = stderr(), sep = "")
  quit(save = "no", status = status)
}

if (!nzchar(gateway_url) || !nzchar(gateway_token)) {
  fail("DSGATEWAY_URL and DSGATEWAY_TOKEN must be set by the node.")
}
.stations <- list()
if (nzchar(Sys.getenv("DSGATEWAY_STATIONS"))) {
  .stations <- fromJSON(Sys.getenv("DSGATEWAY_STATIONS"), simplifyVector = FALSE)
  names(.stations) <- vapply(.stations, function(s) s$name, "")
}
stations <- names(.stations)
if (is.null(stations)) stations <- character(0)
parameters <- tryCatch(
  fromJSON(file.path(input_dir, "parameters.json"), simplifyVector = FALSE),
  error = function(e) fail(paste("cannot read parameters.json:", conditionMessage(e)))
)

# ------------------------------------------------------------ the Armadillo API with httr

.dsg <- new.env()
.dsg$logged_in <- character(0) # the targets with a session: "" is this node

# Where a call goes: this node's gateway, or a station through the relay.
.dsg_target <- function(station) {
  if (is.null(station)) {
    return(list(key = "", url = gateway_url, token = gateway_token))
  }
  s <- .stations[[station]]
  if (is.null(s)) stop(sprintf("no station %s (stations: %s)", station,
                               paste(stations, collapse = ", ")), call. = FALSE)
  list(key = station, url = sub("/+$", "", s$url), token = s$token)
}

.dsg_auth <- function(target) add_headers(Authorization = paste("Bearer", target$token))

.dsg_stop_for <- function(response, what) {
  if (status_code(response) >= 300) {
    body <- content(response, as = "text", encoding = "UTF-8")
    message <- tryCatch(fromJSON(body)$message, error = function(e) body)
    stop(sprintf("%s: HTTP %d: %s", what, status_code(response), message), call. = FALSE)
  }
  invisible(response)
}

dsg_login <- function(station = NULL) {
  target <- .dsg_target(station)
  if (!(target$key %in% .dsg$logged_in)) {
    response <- POST(
      paste0(target$url, "/select-profile"), .dsg_auth(target),
      body = charToRaw(gateway_profile), encode = "raw"
    )
    .dsg_stop_for(response, paste("login", target$key))
    .dsg$logged_in <- c(.dsg$logged_in, target$key)
  }
  invisible(target)
}

dsg_logout <- function() {
  for (key in .dsg$logged_in) {
    target <- .dsg_target(if (nzchar(key)) key else NULL)
    try(POST(paste0(target$url, "/logout"), .dsg_auth(target)), silent = TRUE)
  }
  .dsg$logged_in <- character(0)
}

dsg_load_table <- function(symbol, table, variables = NULL, station = NULL) {
  target <- dsg_login(station)
  query <- list(table = table, symbol = symbol)
  if (!is.null(variables)) query$variables <- paste(variables, collapse = ",")
  response <- POST(paste0(target$url, "/load-table"), .dsg_auth(target), query = query)
  .dsg_stop_for(response, sprintf("load %s <- %s", symbol, table))
  invisible(TRUE)
}

dsg_assign <- function(symbol, expr, station = NULL) {
  target <- dsg_login(station)
  response <- POST(
    paste0(target$url, "/symbols/", symbol), .dsg_auth(target),
    body = expr, content_type("text/plain"), encode = "raw"
  )
  .dsg_stop_for(response, sprintf("assign %s <- %s", symbol, expr))
  invisible(TRUE)
}

dsg_aggregate <- function(expr, station = NULL) {
  target <- dsg_login(station)
  response <- POST(
    paste0(target$url, "/execute"), .dsg_auth(target),
    body = expr, content_type("text/plain"), accept("application/octet-stream"),
    encode = "raw"
  )
  .dsg_stop_for(response, expr)
  unserialize(content(response, as = "raw"))
}

write_json <- function(name, value) {
  path <- file.path(output_dir, name)
  jsonlite::write_json(value, path, auto_unbox = TRUE, digits = NA, null = "null", na = "null")
  invisible(path)
}

# ------------------------------------------------------------ DSI, when installed

# DSI connection names for station names. dsBaseClient pastes server names into R code
# that it parses (ds.table: `TABLE.STUDY.<name>_row.props=`), so "node-a" breaks it
# (checked with dsBaseClient 6.3.3): letters, digits and "_", a letter first, unique.
.dsg_server_names <- function(names) {
  out <- gsub("[^A-Za-z0-9_]", "_", names)
  out <- ifelse(grepl("^[A-Za-z]", out), out, paste0("s_", out))
  make.unique(out, sep = "_")
}

# What DSI kept of the last call's failures at each station: the message DSI stops with
# only says to call datashield.errors(), which the researcher cannot do after the run.
.dsg_print_dsi_errors <- function() {
  errors <- tryCatch(DSI::datashield.errors(), error = function(e) NULL)
  if (length(errors) == 0) return(invisible())
  cat("DataSHIELD errors of the last DSI call (DSI::datashield.errors()):\n", file = stderr())
  for (name in names(errors)) {
    cat("  ", name, ": ", paste(errors[[name]], collapse = " "), "\n", file = stderr(), sep = "")
  }
}

conns <- NULL
has_dsi <- requireNamespace("DSI", quietly = TRUE) &&
  requireNamespace("DSMolgenisArmadillo", quietly = TRUE)
tables <- parameters$tables
if (is.null(tables)) tables <- list()
for (symbol in names(tables)) {
  if (!is.character(tables[[symbol]]) || length(tables[[symbol]]) != 1) {
    fail(sprintf("`tables`: %s must be a table name such as \"demo/cohort/patients\".", symbol))
  }
}
if (length(tables) > 0 && (is.null(names(tables)) || !all(nzchar(names(tables))))) {
  fail("`tables` must map symbols to table names: {\"D\": \"demo/cohort/patients\"}.")
}

run <- function() {
  if (has_dsi) {
    suppressPackageStartupMessages(library(DSMolgenisArmadillo))
    builder <- DSI::newDSLoginBuilder()
    if (length(.stations) > 0) {
      # Every target station through the relay: the token names the node.
      servers <- .dsg_server_names(stations)
      for (i in seq_along(.stations)) {
        s <- .stations[[i]]
        builder$append(
          server = servers[[i]], url = s$url, token = s$token,
          driver = "ArmadilloDriver", profile = gateway_profile
        )
      }
    } else {
      builder$append(
        server = "node", url = gateway_url, token = gateway_token,
        driver = "ArmadilloDriver", profile = gateway_profile
      )
    }
    conns <<- DSI::datashield.login(logins = builder$build(), assign = FALSE)
    for (symbol in names(tables)) {
      DSI::datashield.assign.table(conns, symbol, tables[[symbol]])
    }
  } else if (length(.stations) > 0) {
    for (station in stations) {
      for (symbol in names(tables)) dsg_load_table(symbol, tables[[symbol]], station = station)
    }
  } else {
    for (symbol in names(tables)) dsg_load_table(symbol, tables[[symbol]])
  }
  script <- parameters$script
  if (!is.character(script) || length(script) != 1 || basename(script) != script) {
    fail("`script` must name a file in /input.")
  }
  path <- file.path(input_dir, script)
  if (!file.exists(path)) fail(sprintf("`script`: %s does not exist.", path))
  source(path, local = new.env(parent = globalenv()), echo = FALSE)
}

status <- tryCatch(
  {
    run()
    0L
  },
  error = function(e) {
    cat("Error: ", conditionMessage(e), "\n", file = stderr(), sep = "")
    if (has_dsi) .dsg_print_dsi_errors()
    1L
  },
  finally = {
    if (!is.null(conns)) try(DSI::datashield.logout(conns), silent = TRUE)
    dsg_logout()
  }
)
quit(save = "no", status = status)
