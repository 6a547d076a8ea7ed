# Correlation and covariance building blocks: corDS, covDS.

# The data frame of the variables named by x (and y), columns named as dsBase
# names them (a data frame's own names; "x.val"/"y.val" for plain vectors).
.corcov_frame <- function(x, y, envir) {
  x.val <- .get_object(x, envir, "x")
  if (is.null(y)) return(as.data.frame(x.val))
  y.val <- .get_object(y, envir, "y")
  as.data.frame(cbind(x.val = x.val, y.val = y.val))
}

# Numeric matrix of the frame (factors by their labels, as dsBase computes sums).
.numeric_columns <- function(df) {
  cols <- lapply(df, function(col) {
    if (is.numeric(col) || is.logical(col)) as.numeric(col)
    else suppressWarnings(as.numeric(as.character(col)))
  })
  m <- matrix(unlist(cols, use.names = FALSE), nrow = nrow(df), ncol = length(cols))
  colnames(m) <- colnames(df)
  m
}

# TRUE for each column that has exactly two distinct non-missing values, one of
# them seen fewer than nfilter.tab times.
.binary_small <- function(df, nfilter.tab) {
  vapply(df, function(col) {
    v <- col[!is.na(col)]
    if (length(unique(v)) != 2L) return(FALSE)
    counts <- table(as.character(v))
    min(counts[counts >= 1]) < nfilter.tab
  }, logical(1))
}

.named_matrix <- function(value, nrow, ncol, rn = NULL, cn = NULL) {
  m <- matrix(value, nrow = nrow, ncol = ncol)
  if (!is.null(rn)) rownames(m) <- rn
  if (!is.null(cn)) colnames(m) <- cn
  m
}

#' Sums for a pooled correlation matrix (aggregate, ds.cor).
#'
#' `x`, `y`: names of a data frame/matrix or vectors. Refused when the number of
#' variables exceeds nfilter.glm times the number of rows, or when a binary
#' variable has a category with fewer than nfilter.tab observations. Rows with any
#' missing value are dropped (casewise).
corDS <- function(x = NULL, y = NULL) {
  nfilter.tab <- .nfilter("nfilter.tab")
  nfilter.glm <- .nfilter("nfilter.glm")
  df <- .corcov_frame(x, y, parent.frame())
  cls <- colnames(df)
  p <- ncol(df)
  if (p > nfilter.glm * nrow(df)) {
    stop(paste0("ERROR: The ratio of the number of variables over the number of ",
                "individual-level\n                          records exceeds the allowed ",
                "threshold, there is a possible risk of disclosure"), call. = FALSE)
  }
  if (any(.binary_small(df, nfilter.tab))) {
    stop(paste0("ERROR: at least one variable is binary with one category less than the ",
                "filter threshold for table cell size"), call. = FALSE)
  }
  column.NAs <- .named_matrix(vapply(df, function(col) sum(is.na(col)), integer(1)),
                              1, p, cn = cls)
  complete <- stats::complete.cases(df)
  m <- .numeric_columns(df[complete, , drop = FALSE])
  n.complete <- sum(complete)
  casewise.NAs <- .named_matrix(nrow(df) - n.complete, p, p, cls, cls)
  na.counts <- list(column.NAs, casewise.NAs)
  names(na.counts) <- c("Number of NAs in each column", "Number of NAs casewise")
  sums.of.products <- crossprod(m)
  dimnames(sums.of.products) <- list(cls, cls)
  col.sums <- colSums(m)
  sums <- .named_matrix(rep(col.sums, times = p), p, p, cls, cls)
  sums.of.squares <- .named_matrix(rep(colSums(m * m), times = p), p, p, cls, cls)
  complete.counts <- .named_matrix(n.complete, p, p, cls, cls)
  list(sums.of.products = sums.of.products, sums = sums, complete.counts = complete.counts,
       na.counts = na.counts, sums.of.squares = sums.of.squares)
}

#' Sums for a pooled covariance matrix (aggregate, ds.cov).
#'
#' `use`: "casewise.complete" or "pairwise.complete". When the disclosure checks
#' fail (nfilter.glm saturation, binary variable with a category below
#' nfilter.tab) every matrix is returned filled with NA and `errorMessage` says
#' why; otherwise errorMessage is NA.
covDS <- function(x = NULL, y = NULL, use = NULL) {
  nfilter.tab <- .nfilter("nfilter.tab")
  nfilter.glm <- .nfilter("nfilter.glm")
  if (is.null(use)) use <- "casewise.complete"
  if (!(use %in% c("casewise.complete", "pairwise.complete"))) {
    stop("FAILED: use must be 'casewise.complete' or 'pairwise.complete'", call. = FALSE)
  }
  df <- .corcov_frame(x, y, parent.frame())
  cls <- colnames(df)
  p <- ncol(df)
  pairwise <- use == "pairwise.complete"
  na.names <- c("Number of NAs in each column",
                if (pairwise) "Number of NAs pairwise" else "Number of NAs casewise")

  error.message <- NA
  if (p > nfilter.glm * nrow(df)) {
    error.message <- paste0("ERROR: The ratio of the number of variables over the number of ",
                            "individual-level records exceeds the allowed threshold, there is ",
                            "a possible risk of disclosure")
  } else if (any(.binary_small(df, nfilter.tab))) {
    error.message <- paste0("ERROR: at least one variable is binary with one category less ",
                            "than the filter threshold for table cell size")
  }
  if (!is.na(error.message)) {
    sums <- if (pairwise) .named_matrix(NA, p, p, cls) else .named_matrix(NA, p, 1, cls)
    na.counts <- list(.named_matrix(NA, 1, p, cn = cls),
                      if (pairwise) .named_matrix(NA, p, p, cls, cls) else .named_matrix(NA, 1, 1))
    names(na.counts) <- na.names
    return(list(sums.of.products = .named_matrix(NA, p, p, cls, cls), sums = sums,
                complete.counts = .named_matrix(NA, p, p, cls, cls), na.counts = na.counts,
                errorMessage = error.message))
  }

  column.NAs <- .named_matrix(vapply(df, function(col) sum(is.na(col)), integer(1)),
                              1, p, cn = cls)
  if (!pairwise) {
    complete <- stats::complete.cases(df)
    m <- .numeric_columns(df[complete, , drop = FALSE])
    sums.of.products <- crossprod(m)
    dimnames(sums.of.products) <- list(cls, cls)
    sums <- .named_matrix(colSums(m), p, 1, cls)
    complete.counts <- .named_matrix(sum(complete), p, p, cls, cls)
    na.counts <- list(column.NAs, as.matrix(nrow(df) - sum(complete)))
  } else {
    m <- .numeric_columns(df)
    present <- !is.na(m)
    m0 <- m
    m0[!present] <- 0
    both <- crossprod(present * 1)            # rows where both i and j are present
    sums.of.products <- crossprod(m0)         # missing values contribute 0
    sums <- crossprod(m0, present * 1)        # sum of x_i over rows where x_j is present
    dimnames(sums.of.products) <- dimnames(sums) <- dimnames(both) <- list(cls, cls)
    complete.counts <- both
    storage.mode(complete.counts) <- "integer"
    pairwise.NAs <- nrow(df) - complete.counts
    na.counts <- list(column.NAs, pairwise.NAs)
  }
  names(na.counts) <- na.names
  list(sums.of.products = sums.of.products, sums = sums, complete.counts = complete.counts,
       na.counts = na.counts, errorMessage = NA)
}
