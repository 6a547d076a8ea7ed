# Generalised linear models, fitted by the client with IRLS over the studies:
# glmDS1 (set-up and checks), glmDS2 (one iteration: information matrix, score
# vector, deviance).
#
# Both build the model exactly as dsBase's call glm(formula, family, x = TRUE,
# control = glm.control(maxit = 1), contrasts = NULL, data = data) builds it (the
# same model frame, response, model matrix and family initialisation), but without
# fitting it: glmDS2 needs only X'WX, X'W(y - mu)/mu.eta and the deviance at the
# client's coefficients, which are a few vector operations and two crossprod()s.

.glm_formula <- function(formula, envir) {
  if (is.character(formula)) formula <- stats::as.formula(formula, env = envir)
  if (!inherits(formula, "formula")) {
    stop("FAILED: formula must be a model formula", call. = FALSE)
  }
  formula
}

.glm_family <- function(family) {
  if (is.character(family)) {
    if (length(family) != 1L ||
        !(family %in% c("gaussian", "binomial", "poisson", "Gamma", "inverse.gaussian",
                        "quasi", "quasibinomial", "quasipoisson"))) {
      stop("FAILED: family must be the name of a glm family, e.g. 'gaussian'", call. = FALSE)
    }
    family <- get(family, mode = "function", envir = asNamespace("stats"))
  }
  if (is.function(family)) family <- family()
  if (!inherits(family, "family")) stop("FAILED: family is not a glm family", call. = FALSE)
  family
}

# The model as glm() sets it up before its first iteration: the model frame (rows
# with a missing variable dropped, then unused factor levels dropped, as
# model.frame(na.action = na.omit, drop.unused.levels = TRUE) does), the response
# after the family's initialisation (a factor response of binomial becomes "not the
# first level"; invalid responses stop with glm's own messages), and the model matrix
# with the default contrasts. Returns list(X, y, complete): `complete` marks the rows
# of the variables that are complete (dsBase's Nvalid counts them).
.glm_model <- function(formula, family, data) {
  mf <- stats::model.frame(formula, data = data, na.action = stats::na.pass,
                           drop.unused.levels = FALSE)
  mt <- attr(mf, "terms")
  complete <- stats::complete.cases(mf)
  if (!all(complete)) {
    mf <- mf[complete, , drop = FALSE]
    attr(mf, "terms") <- mt
  }
  for (nm in names(mf)) {
    x <- mf[[nm]]
    if (is.factor(x) && length(unique(x[!is.na(x)])) < length(levels(x))) {
      mf[[nm]] <- x[, drop = TRUE]
    }
  }
  # the response without names (model.response() would name it by the row names,
  # which costs more than the whole iteration on a large frame)
  y <- if (attr(mt, "response") > 0L) mf[[1L]] else NULL
  if (length(dim(y)) == 1L) dim(y) <- NULL
  X <- if (!stats::is.empty.model(mt)) {
    stats::model.matrix(mt, mf, contrasts.arg = NULL)
  } else {
    matrix(NA_real_, NROW(y), 0L)
  }
  rownames(X) <- NULL
  # glm.fit runs family$initialize with these in scope (no prior weights: dsBase
  # applies them itself, after the fit)
  nobs <- NROW(y)
  weights <- rep.int(1, nobs)
  offset <- rep.int(0, nobs)
  etastart <- NULL
  mustart <- NULL
  n <- NULL
  eval(family$initialize)
  list(X = X, y = as.vector(y), complete = complete)
}

# A variable named by a transmitted string, or NULL.
.glm_vector <- function(name, envir, argname) {
  if (is.null(name)) return(NULL)
  as.vector(.get_object(name, envir, argname))
}

# 1 when the non-missing values of v take exactly two distinct values and one of
# them is seen fewer than nfilter.tab times. dsBase counts them with table(), which
# formats every value as text; counting the two extremes gives the same answer in a
# few vector passes, and a column with three values among its first ones is not
# binary at all.
.binary_invalid <- function(v, nfilter.tab) {
  if (is.factor(v)) v <- as.character(v)
  head <- v[seq_len(min(length(v), 64L))]
  if (length(unique(head[!is.na(head)])) > 2L) return(0)
  valid <- sum(!is.na(v))
  if (valid < 2L) return(0)
  lo <- min(v, na.rm = TRUE)
  hi <- max(v, na.rm = TRUE)
  if (lo == hi) return(0)
  n.lo <- sum(v == lo, na.rm = TRUE)
  n.hi <- sum(v == hi, na.rm = TRUE)
  if (n.lo + n.hi != valid) return(0)
  as.numeric(min(n.lo, n.hi) < nfilter.tab)
}

.columns_invalid <- function(X, nfilter.tab) {
  vapply(seq_len(ncol(X)), function(j) .binary_invalid(X[, j], nfilter.tab), numeric(1))
}

#' Set-up of ds.glm (aggregate): model dimensions and disclosure checks.
#'
#' `formula` (a formula, variables as D$x or as columns of `data`), `family` (e.g.
#' "gaussian"), `weights`, `offset`, `data` (names as strings, or NULL). Returns
#' list(dimX, coef.names, y.invalid, Xpar.invalid, w.invalid, o.invalid,
#' glm.saturation.invalid, errorMessage) where errorMessage is "No errors" or
#' "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE". Checks: parameters
#' more than nfilter.glm times the observations; y, a column of X, the weights or
#' the offset binary with a category below nfilter.tab.
glmDS1 <- function(formula, family, weights, offset, data) {
  nfilter.tab <- .nfilter("nfilter.tab")
  nfilter.glm <- .nfilter("nfilter.glm")
  envir <- parent.frame()
  data.table <- if (is.null(data)) NULL else .get_object(data, envir, "data")
  model <- .glm_model(.glm_formula(formula, envir), .glm_family(family), data.table)
  X <- model$X
  dimX <- dim(X)
  glm.saturation.invalid <- as.numeric(dimX[2] > nfilter.glm * dimX[1])
  y.invalid <- .binary_invalid(model$y, nfilter.tab)
  Xpar.invalid <- .columns_invalid(X, nfilter.tab)
  # weights and offset: the whole variables, as dsBase checks them
  w <- .glm_vector(weights, envir, "weights")
  o <- .glm_vector(offset, envir, "offset")
  w.invalid <- if (is.null(w)) 0 else .binary_invalid(w, nfilter.tab)
  o.invalid <- if (is.null(o)) 0 else .binary_invalid(o, nfilter.tab)
  invalid <- y.invalid > 0 || w.invalid > 0 || o.invalid > 0 || sum(Xpar.invalid) > 0 ||
    glm.saturation.invalid > 0
  list(dimX = dimX, coef.names = colnames(X), y.invalid = y.invalid,
       Xpar.invalid = Xpar.invalid, w.invalid = w.invalid, o.invalid = o.invalid,
       glm.saturation.invalid = glm.saturation.invalid,
       errorMessage = if (invalid) "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE"
                      else "No errors")
}

#' One IRLS iteration of ds.glm (aggregate).
#'
#' `beta.vect`: the current coefficients, comma separated. Returns list(family,
#' info.matrix = X'WX, score.vect = X'Wz, numsubs, dev, Nvalid, Nmissing, Ntotal,
#' disclosure.risk, errorMessage2). The disclosure checks of glmDS1 are repeated on
#' the rows actually used; if any fails, info.matrix and score.vect are both
#' replaced by NA and disclosure.risk is 1.
glmDS2 <- function(formula, family, beta.vect, offset, weights, dataName) {
  nfilter.tab <- .nfilter("nfilter.tab")
  nfilter.glm <- .nfilter("nfilter.glm")
  envir <- parent.frame()
  data.df <- if (is.null(dataName)) NULL else .get_object(dataName, envir, "dataName")
  formula <- .glm_formula(formula, envir)
  f <- .glm_family(family)

  model <- .glm_model(formula, f, data.df)
  X <- model$X
  y <- model$y
  # counts over the model's variables (y and covariates, before weights/offset)
  yx.complete <- model$complete
  Ntotal <- length(yx.complete)
  Nvalid <- sum(yx.complete)
  Nmissing <- Ntotal - Nvalid

  # weights and offset on the model's rows, then drop rows where they are missing
  w.all <- .glm_vector(weights, envir, "weights")
  o.all <- .glm_vector(offset, envir, "offset")
  if ((!is.null(w.all) && length(w.all) != Ntotal) ||
      (!is.null(o.all) && length(o.all) != Ntotal)) {
    stop("FAILED: weights and offset must have one value per observation", call. = FALSE)
  }
  w <- if (is.null(w.all)) rep.int(1, length(y)) else w.all[yx.complete]
  o <- if (is.null(o.all)) rep.int(0, length(y)) else o.all[yx.complete]
  keep <- !is.na(w) & !is.na(o)
  if (!all(keep)) {
    y <- y[keep]
    X <- X[keep, , drop = FALSE]
    w <- w[keep]
    o <- o[keep]
  }

  beta <- suppressWarnings(
    as.numeric(unlist(strsplit(as.character(beta.vect), split = ",", fixed = TRUE))))
  if (length(beta) != ncol(X) || anyNA(beta)) {
    stop(paste0("FAILED: beta.vect must hold ", ncol(X), " numbers"), call. = FALSE)
  }
  eta <- drop(X %*% beta)
  if (!is.null(offset)) eta <- eta + o
  mu <- f$linkinv(eta)
  mu.eta <- f$mu.eta(eta)
  W <- as.vector(mu.eta^2 / f$variance(mu))
  if (!is.null(weights)) W <- W * w
  dev <- f$dev.resids(y, mu, rep.int(1, length(y)))
  dev <- if (is.null(weights)) sum(dev) else sum(dev * w)
  info.matrix <- crossprod(X, W * X)
  score.vect <- crossprod(X, W * ((y - mu) / mu.eta))

  errors <- NULL
  risk <- FALSE
  if (ncol(X) > nfilter.glm * nrow(X)) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: Model has too many parameters, there is a possible ",
                               "risk of disclosure - please simplify model"))
  }
  if (.binary_invalid(y, nfilter.tab) > 0) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: y vector is binary with one category less than ",
                               "filter threshold for table cell size"))
  }
  if (any(.columns_invalid(X, nfilter.tab) > 0)) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: at least one column in X matrix is binary with one ",
                               "category less than filter threshold for table cell size"))
  }
  if (.binary_invalid(w, nfilter.tab) > 0) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: w vector is binary with one category less than ",
                               "filter threshold for table cell size"))
  }
  if (.binary_invalid(o, nfilter.tab) > 0) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: offset vector is binary with one category less than ",
                               "filter threshold for table cell size"))
  }
  if (risk) {
    info.matrix <- NA
    score.vect <- NA
    errors <- c(errors, paste0("MODEL FAILED: model or data invalid, info.matrix and ",
                               "score.vector destroyed"))
  } else {
    errors <- "No errors"
  }
  list(family = f, info.matrix = info.matrix, score.vect = score.vect, numsubs = length(y),
       dev = dev, Nvalid = Nvalid, Nmissing = Nmissing, Ntotal = Ntotal,
       disclosure.risk = as.numeric(risk), errorMessage2 = errors)
}
