# Contingency tables: table1DDS, tableDS, tableDS.assign, tableDS2.

#' One-dimensional table of a vector (aggregate); `xvect` is the vector itself.
#'
#' Returns list(table = a one-row data.frame of counts with a "Total" column,
#' message = "valid Table"). Refused when any non-zero count is below nfilter.tab.
table1DDS <- function(xvect) {
  nfilter.tab <- .nfilter("nfilter.tab")
  tab <- table(xvect)
  counts <- as.numeric(tab)
  out <- as.data.frame(t(c(counts, sum(counts, na.rm = TRUE))))
  colnames(out) <- c(names(tab), "Total")
  if (any(counts > 0 & counts < nfilter.tab)) {
    stop("invalid table - invalid counts present", call. = FALSE)
  }
  list(table = out, message = "valid Table")
}

# Split a comma-separated transmitted list; NULL stays NULL.
.split_transmit <- function(text) {
  if (is.null(text)) return(NULL)
  unlist(strsplit(as.character(text), split = ",", fixed = TRUE))
}

# Turn a transmitted variable into a factor carrying all the levels of all studies.
.table_factor <- function(name, levels.transmit, envir, argname) {
  x <- .get_object(name, envir, argname)
  lv <- .split_transmit(levels.transmit)
  if (is.null(lv)) lv <- levels(factor(x))
  if (is.factor(x)) factor(x, levels = lv) else factor(as.factor(x), levels = lv)
}

# The `exclude` values of table(): a single transmitted "NA" means NA, "NaN" NaN;
# otherwise the values are compared with the levels as character strings.
.table_exclude <- function(exclude.transmit) {
  values <- .split_transmit(exclude.transmit)
  if (is.null(values)) return(NULL)
  if (length(values) == 1L) {
    if (identical(values, "NA")) return(NA)
    if (identical(values, "NaN")) return(NaN)
  }
  values
}

.table_vars <- function(rvar.transmit, cvar.transmit, stvar.transmit,
                        rvar.all.unique.levels.transmit, cvar.all.unique.levels.transmit,
                        stvar.all.unique.levels.transmit, envir) {
  vars <- list(rvar = .table_factor(rvar.transmit, rvar.all.unique.levels.transmit,
                                    envir, "rvar.transmit"))
  if (!is.null(cvar.transmit)) {
    vars$cvar <- .table_factor(cvar.transmit, cvar.all.unique.levels.transmit, envir,
                               "cvar.transmit")
    if (!is.null(stvar.transmit)) {
      vars$stvar <- .table_factor(stvar.transmit, stvar.all.unique.levels.transmit, envir,
                                  "stvar.transmit")
    }
  }
  vars
}

.make_table <- function(vars, exclude, useNA) {
  if (is.null(useNA)) useNA <- "always"
  args <- c(unname(vars), list(exclude = exclude, useNA = useNA))
  tab <- do.call(table, args)
  names(dimnames(tab)) <- names(vars)
  tab
}

#' A 1-, 2- or 3-dimensional table (aggregate, ds.table).
#'
#' The variables are named by `rvar.transmit`, `cvar.transmit`, `stvar.transmit`;
#' the `*.all.unique.levels.transmit` arguments carry the levels of all studies,
#' comma separated. Cell counts are first checked without NA/NaN: if any non-zero
#' count is below nfilter.tab (or below a larger `force.nfilter.transmit`) the
#' table is refused: for 3 dimensions with an error, for 1 and 2 dimensions by
#' returning the message string (as dsBase does, ds.table reads it).
tableDS <- function(rvar.transmit, cvar.transmit, stvar.transmit, rvar.all.unique.levels.transmit,
                    cvar.all.unique.levels.transmit, stvar.all.unique.levels.transmit,
                    exclude.transmit, useNA.transmit, force.nfilter.transmit) {
  nfilter.tab <- .nfilter("nfilter.tab")
  if (!is.null(force.nfilter.transmit)) {
    forced <- suppressWarnings(as.numeric(.get_object(as.character(force.nfilter.transmit),
                                                      parent.frame(), "force.nfilter",
                                                      allow_constant = TRUE)))
    if (length(forced) != 1L || is.na(forced) || forced < nfilter.tab) {
      stop(paste0("Failed: if force.nfilter is non-null it must be >= to nfilter.tab i.e.",
                  nfilter.tab), call. = FALSE)
    }
    nfilter.tab <- max(nfilter.tab, forced)
  }
  vars <- .table_vars(rvar.transmit, cvar.transmit, stvar.transmit,
                      rvar.all.unique.levels.transmit, cvar.all.unique.levels.transmit,
                      stvar.all.unique.levels.transmit, parent.frame())
  check <- do.call(table, c(unname(vars), list(exclude = "NaN", useNA = "no")))
  if (any(check > 0 & check < nfilter.tab)) {
    msg <- paste0("Failed: at least one cell has a non-zero count less than nfilter.tab i.e. ",
                  nfilter.tab)
    if (length(vars) == 3L) stop(msg, call. = FALSE)
    return(msg)
  }
  .make_table(vars, .table_exclude(exclude.transmit), useNA.transmit)
}

#' The same table written to the server (assign, ds.table with table.assign=TRUE).
#'
#' Returns list(table, counts, dim, dimnames); not checked because it stays on the
#' server.
tableDS.assign <- function(rvar.transmit, cvar.transmit, stvar.transmit,
                           rvar.all.unique.levels.transmit, cvar.all.unique.levels.transmit,
                           stvar.all.unique.levels.transmit, exclude.transmit, useNA.transmit) {
  vars <- .table_vars(rvar.transmit, cvar.transmit, stvar.transmit,
                      rvar.all.unique.levels.transmit, cvar.all.unique.levels.transmit,
                      stvar.all.unique.levels.transmit, parent.frame())
  tab <- .make_table(vars, .table_exclude(exclude.transmit), useNA.transmit)
  list(table = as.table(tab), counts = as.vector(tab), dim = dim(tab), dimnames = dimnames(tab))
}

#' Layout of a server-side table written by tableDS.assign (aggregate).
#'
#' Returns the cell identifiers 1..n, the dimensions and dimnames, and an array of
#' cell identifiers whose dimnames are named after the transmitted variable names.
#' No count leaves the server.
tableDS2 <- function(newobj, rvar.transmit, cvar.transmit, stvar.transmit) {
  obj <- .get_object(newobj, parent.frame(), "newobj")
  if (!is.list(obj) || length(obj) < 4L) {
    stop("FAILED: <newobj> is not a table written by tableDS.assign", call. = FALSE)
  }
  n.cells <- length(obj[[2]])
  ids <- as.vector(seq_len(n.cells))
  out.dim <- obj[[3]]
  out.dimnames <- obj[[4]]
  structure <- array(ids, dim = out.dim, dimnames = out.dimnames)
  dn.names <- c(rvar.transmit, cvar.transmit, stvar.transmit)
  if (!is.null(rvar.transmit) && length(dn.names) == length(dim(structure))) {
    names(dimnames(structure)) <- dn.names
  }
  list(table.cell.IDs = ids, table.dim = out.dim, table.dimnames = out.dimnames,
       table.structure_and_cell.order = structure)
}
