# Row (and column) subsets of a data frame: dataFrameSubsetDS1 (checks, aggregate)
# and dataFrameSubsetDS2 (the subset, assign).

.subset_operators <- c("==", "!=", "<", "<=", ">", ">=")

# Parse "1,3,4" into column numbers, or stop.
.subset_columns <- function(text, argname) {
  if (is.null(text)) return(NULL)
  cols <- suppressWarnings(as.numeric(unlist(strsplit(as.character(text), ",", fixed = TRUE))))
  if (anyNA(cols)) {
    stop(paste0("FAILED: ", argname, " argument contains non-numerics (disclosure risk)"),
         call. = FALSE)
  }
  cols
}

.subset_string_check <- function(value, nfilter.string, message) {
  if (!is.null(value) && is.character(value) && any(nchar(value) > nfilter.string)) {
    stop(message, call. = FALSE)
  }
}

# Shared by DS1 and DS2: checks the arguments, evaluates the selection and
# returns the full data frame, the selected rows and the parsed column lists.
.subset_rows <- function(df.name, V1.name, V2.name, Boolean.operator.n, keep.cols, rm.cols,
                         keep.NAs, envir) {
  .checkPrivacyControlLevel(c("permissive", "banana"))
  nfilter.subset <- .nfilter("nfilter.subset")
  nfilter.string <- .nfilter("nfilter.string")
  keep <- .subset_columns(keep.cols, "keep.cols")
  rm <- .subset_columns(rm.cols, "rm.cols")
  .subset_string_check(df.name, nfilter.string,
                       "FAILED: df.name argument > nfilter.string - please shorten")
  .subset_string_check(V1.name, nfilter.string,
                       "FAILED: V[i].name argument > nfilter.string - please shorten")
  .subset_string_check(V2.name, nfilter.string,
                       "FAILED: V[ii].name argument > nfilter.string - please shorten")
  if (!is.character(df.name) || length(df.name) != 1L) {
    stop("FAILED: df.name argument must be character and must name a data.frame", call. = FALSE)
  }
  if (!is.character(V1.name) || length(V1.name) != 1L) {
    stop("FAILED: V[i].name must be character", call. = FALSE)
  }
  if (!is.character(V2.name) || length(V2.name) != 1L) {
    stop("FAILED: V[ii].name must be character", call. = FALSE)
  }
  source <- .get_object(df.name, envir, "df.name")
  # as dsBase: whatever data.frame() accepts (a data frame, matrix, vector, list)
  df <- tryCatch(data.frame(source), error = function(e) NULL)
  if (is.null(df)) {
    stop("FAILED: df.name argument must be character and must name a data.frame", call. = FALSE)
  }
  n <- nrow(df)

  if (V1.name == "ONES" || V2.name == "ONES") {
    selected <- rep(TRUE, n)
  } else {
    V1 <- .get_object(V1.name, envir, "V1.name", allow_constant = TRUE)
    V2 <- .get_object(V2.name, envir, "V2.name", allow_constant = TRUE)
    if (length(V1) != n) {
      stop("FAILED: V[i] must of length equal to column length of df to be subsetted",
           call. = FALSE)
    }
    if (!(length(V2) == length(V1) || length(V2) == 1L)) {
      stop("FAILED: V[ii] must either be of length one or of length equal to V[i]",
           call. = FALSE)
    }
    op.n <- suppressWarnings(as.numeric(Boolean.operator.n))
    if (length(op.n) != 1L || is.na(op.n) || !(op.n %in% 1:6)) {
      stop("FAILED: Boolean.operator must be: '==', '!=', '<', '<=', '>' or '>='",
           call. = FALSE)
    }
    op <- match.fun(.subset_operators[op.n])
    selected <- as.logical(op(V1, V2))
    selected[is.na(selected)] <- isTRUE(as.logical(keep.NAs))
  }
  subset <- df[selected, , drop = FALSE]
  if (nrow(subset) < nfilter.subset) {
    stop("Subset to be created is too small (<nfilter.subset)", call. = FALSE)
  }
  list(df = df, subset = subset, keep = keep, rm = rm)
}

#' Check a data frame subset before it is made (aggregate, ds.dataFrameSubset).
#'
#' Arguments as dataFrameSubsetDS2. Refused when the subset would have fewer than
#' nfilter.subset rows. Returns "Subsetting undertaken without problems", or a
#' list of ten warning lines when the subset differs from the original by fewer
#' than nfilter.subset rows (a possible difference attack).
dataFrameSubsetDS1 <- function(df.name = NULL, V1.name = NULL, V2.name = NULL,
                               Boolean.operator.n = NULL, keep.cols = NULL, rm.cols = NULL,
                               keep.NAs = NULL) {
  s <- .subset_rows(df.name, V1.name, V2.name, Boolean.operator.n, keep.cols, rm.cols,
                    keep.NAs, parent.frame())
  difference <- abs(nrow(s$subset) - nrow(s$df))
  if (difference > 0 && difference < .nfilter("nfilter.subset")) {
    return(list(
      "Warning: DataSHIELD monitors every session for potentially disclosive analytic requests.",
      "The analysis you just submitted has generated a subset in which the number of elements",
      "differs - but only very slightly so - from the original data frame. This is most likely to be",
      "an innocent consequence of your subsetting needs. However, it could in theory be one step",
      "in a difference-based attack aimed at identifying individuals. This analytic request has",
      "therefore been highlighted in the session log file. Please be reassured, if you do not try",
      "to identify individuals this will cause you no difficulty. However, if you do plan a ",
      "malicious attempt to identify individuals by differencing, this will become obvious in the",
      "session log and you will be sanctioned. Possible consequences include loss of future access",
      "to DataSHIELD and/or legal penalties."))
  }
  "Subsetting undertaken without problems"
}

#' Make a data frame subset (assign, ds.dataFrameSubset).
#'
#' Rows of data frame `df.name` where `V1.name` <op> `V2.name` holds, op being
#' Boolean.operator.n 1..6 = '==', '!=', '<', '<=', '>', '>='; V2 may be a single
#' value (e.g. "2"); "ONES" as V1 or V2 keeps every row. Missing comparisons drop
#' the row unless keep.NAs is TRUE. Columns: keep.cols or rm.cols ("1,3"), not
#' both. Refused when fewer than nfilter.subset rows would remain.
dataFrameSubsetDS2 <- function(df.name = NULL, V1.name = NULL, V2.name = NULL,
                               Boolean.operator.n = NULL, keep.cols = NULL, rm.cols = NULL,
                               keep.NAs = NULL) {
  s <- .subset_rows(df.name, V1.name, V2.name, Boolean.operator.n, keep.cols, rm.cols,
                    keep.NAs, parent.frame())
  if (!is.null(s$keep) && !is.null(s$rm)) {
    stop("You can either specify keep.cols or rm.cols, not both", call. = FALSE)
  }
  if (!is.null(s$keep)) return(s$subset[, s$keep])
  if (!is.null(s$rm)) return(s$subset[, setdiff(seq_len(ncol(s$df)), s$rm)])
  s$subset
}
